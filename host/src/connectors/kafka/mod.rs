//! The `kafka` source and sink (librdkafka through `rdkafka`), on the subtasks' own threads with
//! librdkafka's synchronous consumer and producer.
//!
//! What they share: the client settings of a job file's table, and a client context that turns
//! librdkafka's errors (a broker that cannot be reached, say) into reports: librdkafka retries
//! them itself, so they are logged and shown in the job's status, never a crash.
mod sink;
mod source;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::ProducerContext;

pub use sink::{KafkaSinkConfig, KafkaSinkFactory};
pub use source::{KafkaSourceConfig, KafkaSourceFactory, StartFrom};

/// How long a metadata or offsets request may take before it is retried or reported.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the same client error is logged again while it lasts.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The client settings every kafka table has: the brokers and librdkafka properties passed
/// through as they are.
#[derive(Debug, Clone)]
pub struct KafkaClient {
    /// The connector's uid, in every message.
    pub uid: String,
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Further librdkafka properties (`security.protocol`, `sasl.*`, `compression.type`, …).
    pub properties: BTreeMap<String, String>,
}

impl KafkaClient {
    /// librdkafka's configuration: weir's settings, then the job file's properties over them.
    fn config(&self, own: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config.set("client.id", format!("weir-{}", self.uid));
        for (key, value) in own {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config.set_log_level(RDKafkaLogLevel::Warning);
        config
    }
}

/// The client context of one subtask: keeps librdkafka's latest error for the job's status and
/// logs it (once per [`REPORT_EVERY`] while it lasts).
pub(crate) struct Reporter {
    uid: String,
    last: Mutex<Option<(String, Instant)>>,
    /// Producers: the first record the brokers did not take (librdkafka gave up retrying it).
    undelivered: Mutex<Option<String>>,
    /// Consumers: each partition's high watermark, from librdkafka's statistics.
    high_watermarks: Mutex<HashMap<(String, i32), i64>>,
    /// An error retrying will not cure (the brokers refused the credentials): the subtask fails
    /// with it.
    fatal: Mutex<Option<String>>,
}

impl Reporter {
    fn new(uid: &str) -> Self {
        Reporter {
            uid: uid.to_string(),
            last: Mutex::new(None),
            undelivered: Mutex::new(None),
            high_watermarks: Mutex::new(HashMap::new()),
            fatal: Mutex::new(None),
        }
    }

    /// The latest client error and when it was reported, while one is recent.
    pub(crate) fn recent_error(&self) -> Option<String> {
        let last = self.last.lock().ok()?;
        let (error, at) = last.as_ref()?;
        (at.elapsed() < 2 * REPORT_EVERY).then(|| error.clone())
    }

    /// The first error that retrying will not cure, if one came.
    pub(crate) fn fatal_error(&self) -> Option<String> {
        self.fatal.lock().ok()?.clone()
    }

    /// What a request that failed at the start gets added: the client's latest error says why
    /// (a refused password shows only there; the request itself just fails or times out). The
    /// client reports its errors when `poll`ed, and may report them a little after the request
    /// failed: it is polled for up to a second until one has come.
    pub(crate) fn cause(&self, poll: impl Fn(Duration)) -> String {
        let started = Instant::now();
        loop {
            poll(Duration::from_millis(50));
            if let Some(e) = self.fatal_error().or_else(|| self.recent_error()) {
                return format!(" ({e})");
            }
            if started.elapsed() >= Duration::from_secs(1) {
                return String::new();
            }
        }
    }

    fn report(&self, error: String) {
        let Ok(mut last) = self.last.lock() else { return };
        let repeat = last.as_ref().is_some_and(|(e, at)| *e == error && at.elapsed() < REPORT_EVERY);
        if !repeat {
            tracing::warn!("kafka '{}': {error} (retrying)", self.uid);
            *last = Some((error, Instant::now()));
        }
    }
}

impl ClientContext for Reporter {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if (level as i32) <= RDKafkaLogLevel::Error as i32 {
            self.report(format!("{fac}: {log_message}"));
        } else {
            tracing::debug!("kafka '{}': {fac}: {log_message}", self.uid);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let refused =
            matches!(code, Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed));
        if refused && let Ok(mut fatal) = self.fatal.lock() {
            fatal.get_or_insert_with(|| format!("the brokers refused the credentials: {reason}"));
        }
        self.report(format!("{error}: {reason}"));
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let Ok(mut high) = self.high_watermarks.lock() else { return };
        for (name, topic) in statistics.topics {
            for (id, partition) in topic.partitions {
                if id >= 0 && partition.hi_offset >= 0 {
                    high.insert((name.clone(), id), partition.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Reporter {}

impl ProducerContext for Reporter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _opaque: ()) {
        if let Err((error, _)) = result
            && let Ok(mut undelivered) = self.undelivered.lock()
        {
            undelivered.get_or_insert_with(|| error.to_string());
        }
    }
}
