//! The `kafka` sink: events as records of one topic (event key → record key, value → record
//! value, timestamp → record timestamp).
//!
//! At-least-once: an idempotent producer (no duplicates from its own retries), flushed at every
//! barrier before the barrier is acknowledged, so a completed checkpoint never covers a record
//! the brokers do not have; a restore may write again what was written after it. Exactly-once
//! (transactions committed when checkpoints complete, as Flink's `KafkaSink`) is refused: no
//! broker that can be installed on weir's test machines supports transactions, so it could not
//! be proven (see the README).
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::{KafkaClient, Reporter};
use crate::runtime::{EventBatch, Sink, SinkFactory, SubtaskInfo};

/// How long a barrier waits for the brokers to take what was written before it.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// A checked `kafka` sink table (its delivery is at-least-once, the only one offered).
#[derive(Debug, Clone)]
pub struct KafkaSinkConfig {
    /// Brokers and properties.
    pub client: KafkaClient,
    /// The topic written to.
    pub topic: String,
}

/// Creates kafka sink subtasks.
pub struct KafkaSinkFactory {
    config: Arc<KafkaSinkConfig>,
}

impl KafkaSinkFactory {
    /// A sink writing what `config` names.
    pub fn new(config: KafkaSinkConfig) -> Self {
        KafkaSinkFactory { config: Arc::new(config) }
    }
}

impl SinkFactory for KafkaSinkFactory {
    /// Opens a producer and checks that the topic exists before anything is written (records
    /// for a topic the brokers do not know would otherwise be retried until their timeout).
    fn create(&self, _info: &SubtaskInfo) -> Result<Box<dyn Sink>, String> {
        let config = &self.config;
        let uid = &config.client.uid;
        let producer: BaseProducer<Reporter> = config
            .client
            .config(&[("enable.idempotence", "true"), ("linger.ms", "5")])
            .create_with_context(Reporter::new(uid))
            .map_err(|e| format!("sink '{uid}': cannot create a kafka producer: {e}"))?;
        // All topics: asking for one by name would have brokers that create topics on demand
        // create it.
        let metadata = producer.client().fetch_metadata(None, super::REQUEST_TIMEOUT).map_err(|e| {
            // A producer hears of client errors when it is polled: the reason comes there.
            format!(
                "sink '{uid}': cannot read the topics of the kafka brokers at {}: {e}{}",
                config.client.bootstrap_servers,
                producer.context().cause(|wait| {
                    producer.poll(wait);
                })
            )
        })?;
        match metadata.topics().iter().find(|t| t.name() == config.topic) {
            None => return Err(format!("sink '{uid}': topic '{}' does not exist (create it first)", config.topic)),
            Some(t) => {
                if let Some(error) = t.error() {
                    return Err(format!("sink '{uid}': topic '{}': {}", config.topic, RDKafkaErrorCode::from(error)));
                }
            }
        }
        Ok(Box::new(KafkaSink { config: config.clone(), producer }))
    }
}

struct KafkaSink {
    config: Arc<KafkaSinkConfig>,
    producer: BaseProducer<Reporter>,
}

impl KafkaSink {
    fn uid(&self) -> &str {
        &self.config.client.uid
    }

    /// Fails on the first record the brokers did not take, or once they refused the credentials.
    fn check_delivered(&self) -> Result<(), String> {
        if let Some(fatal) = self.producer.context().fatal_error() {
            return Err(format!("sink '{}': {fatal}", self.uid()));
        }
        match self.producer.context().undelivered.lock().ok().and_then(|u| u.clone()) {
            Some(error) => Err(format!(
                "sink '{}': a record was not delivered to topic '{}': {error}",
                self.uid(),
                self.config.topic
            )),
            None => Ok(()),
        }
    }

    /// Waits until the brokers have every record written so far. Not rdkafka's `flush`, which
    /// sleeps in steps of 100 ms: a barrier waits only as long as the brokers take.
    fn flush(&self) -> Result<(), String> {
        let started = Instant::now();
        while self.producer.in_flight_count() > 0 {
            if started.elapsed() > FLUSH_TIMEOUT {
                return Err(format!(
                    "sink '{}': the brokers did not take the records of topic '{}' in {FLUSH_TIMEOUT:?}",
                    self.uid(),
                    self.config.topic
                ));
            }
            self.producer.poll(Duration::from_millis(1));
        }
        self.check_delivered()
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, batch: &EventBatch) -> Result<(), String> {
        for event in batch.iter() {
            let mut record = BaseRecord::to(&self.config.topic).payload(event.value);
            if let Some(key) = event.key {
                record = record.key(key);
            }
            if let Some(timestamp) = event.timestamp {
                record = record.timestamp(timestamp);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    // librdkafka's queue is full: serve deliveries until there is room.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => {
                        return Err(format!(
                            "sink '{}': cannot write to topic '{}': {e}",
                            self.uid(),
                            self.config.topic
                        ));
                    }
                }
            }
        }
        self.producer.poll(Duration::ZERO);
        self.check_delivered()
    }

    fn pre_commit(&mut self, _id: u64, _lasting: bool) -> Result<Option<serde_json::Value>, String> {
        self.flush()?;
        Ok(None)
    }

    fn finish(&mut self) -> Result<(), String> {
        self.flush()
    }
}
