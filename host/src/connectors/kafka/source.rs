//! The `kafka` source: records of one or more topics as events (record key → event key, value →
//! event value, timestamp → event timestamp).
//!
//! As Flink's `KafkaSource`, it takes no part in consumer-group rebalancing: each partition
//! belongs to one subtask, chosen from the topic and partition alone, and its offsets live in
//! weir's checkpoints. A subtask's position is the next offset of each partition it reads (and,
//! for a bounded source, where each stops), so a restore at another source parallelism merges
//! all positions and every subtask takes its own partitions' offsets from them. Partitions
//! created while the job runs are found every `partition-discovery` interval and read from
//! their beginning. The group id only receives offsets back when checkpoints complete, for
//! monitoring tools.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{KafkaClient, REQUEST_TIMEOUT, Reporter};
use crate::runtime::{Event, EventBatch, MAX_EVENT_BYTES, Position, Source, SourceFactory, SubtaskInfo};

/// Where a partition is read from when no checkpoint or savepoint has its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// Its first record.
    Earliest,
    /// Records produced after the job started.
    Latest,
    /// The group's committed offset (earliest when it has none).
    Committed,
    /// The first record at or after this time, in milliseconds since the Unix epoch.
    Timestamp(i64),
}

/// A checked `kafka` source table.
#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    /// Brokers and properties.
    pub client: KafkaClient,
    /// The topics read.
    pub topics: Vec<String>,
    /// Where partitions no checkpoint has an offset for start.
    pub start_from: StartFrom,
    /// Where a partition whose restored offset is outside its log starts ([`StartFrom::Earliest`]
    /// or [`StartFrom::Latest`]); `None`: such an offset fails the job.
    pub offset_reset: Option<StartFrom>,
    /// Bounded: stop at the end offsets seen when the job first started.
    pub bounded: bool,
    /// `group.id`: where offsets are committed back for monitoring.
    pub group_id: String,
    /// How often new partitions are looked for (never when `None` or bounded).
    pub discovery: Option<Duration>,
    /// Events per second over all subtasks, if limited.
    pub rate: Option<f64>,
}

/// Creates kafka source subtasks.
pub struct KafkaSourceFactory {
    config: Arc<KafkaSourceConfig>,
}

impl KafkaSourceFactory {
    /// A source reading what `config` names.
    pub fn new(config: KafkaSourceConfig) -> Self {
        KafkaSourceFactory { config: Arc::new(config) }
    }
}

/// A topic's partition.
type Partition = (String, i32);

/// What a subtask records at a barrier, as JSON: the next offset of every partition it reads
/// and, when bounded, the offset each stops at.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Offsets {
    next: BTreeMap<String, BTreeMap<i32, i64>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    stop: BTreeMap<String, BTreeMap<i32, i64>>,
}

impl Offsets {
    fn read(position: &Position, uid: &str) -> Result<Self, String> {
        position.read_json(uid, "a kafka source's")
    }

    fn get(map: &BTreeMap<String, BTreeMap<i32, i64>>, (topic, partition): &Partition) -> Option<i64> {
        map.get(topic)?.get(partition).copied()
    }

    fn set(map: &mut BTreeMap<String, BTreeMap<i32, i64>>, (topic, partition): &Partition, offset: i64) {
        map.entry(topic.clone()).or_default().insert(*partition, offset);
    }
}

/// The subtask of `parallelism` that reads `partition` of `topic`: consecutive partitions go to
/// consecutive subtasks from a start that depends on the topic (Flink's
/// `KafkaSourceEnumerator.getSplitOwner`), so several topics spread evenly.
fn owner(topic: &str, partition: i32, parallelism: u32) -> u32 {
    let start = xxhash_rust::xxh3::xxh3_64(topic.as_bytes()) % u64::from(parallelism);
    ((start + partition as u64) % u64::from(parallelism)) as u32
}

impl SourceFactory for KafkaSourceFactory {
    fn create(&self, info: &SubtaskInfo, resume: Option<&Position>) -> Result<Box<dyn Source>, String> {
        let config = &self.config;
        let uid = &config.client.uid;
        let reporter = Reporter::new(uid);
        let consumer: BaseConsumer<Reporter> = config
            .client
            .config(&[
                ("group.id", &config.group_id),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                // Every start offset is resolved by the source; one that is gone (deleted by
                // retention) fails the job rather than skipping records silently.
                ("auto.offset.reset", "error"),
                // Statistics carry each partition's high watermark, for the lag in the status.
                ("statistics.interval.ms", "1000"),
            ])
            .create_with_context(reporter)
            .map_err(|e| format!("source '{uid}': cannot create a kafka consumer: {e}"))?;
        let resumed = resume.map(|p| Offsets::read(p, uid)).transpose()?;
        let mut source = KafkaSource {
            config: config.clone(),
            info: info.clone(),
            consumer,
            next: BTreeMap::new(),
            stop: BTreeMap::new(),
            discovered: Instant::now(),
            reported: None,
        };
        let partitions = source.owned_partitions(true)?;
        source.add(partitions, resumed.as_ref())?;
        Ok(Box::new(source))
    }

    fn rate(&self) -> Option<f64> {
        self.config.rate
    }

    fn merge_positions(&self, uid: &str, recorded: &[Position]) -> Result<Position, String> {
        let mut merged = Offsets::default();
        for position in recorded {
            let offsets = Offsets::read(position, uid)?;
            for (topic, partitions) in offsets.next {
                merged.next.entry(topic).or_default().extend(partitions);
            }
            for (topic, partitions) in offsets.stop {
                merged.stop.entry(topic).or_default().extend(partitions);
            }
        }
        Ok(Position::json(&merged))
    }
}

struct KafkaSource {
    config: Arc<KafkaSourceConfig>,
    info: SubtaskInfo,
    consumer: BaseConsumer<Reporter>,
    /// The next offset of each partition this subtask reads.
    next: BTreeMap<Partition, i64>,
    /// Bounded: where each partition ends. A partition at its end is no longer read.
    stop: BTreeMap<Partition, i64>,
    /// When partitions were last looked for.
    discovered: Instant,
    /// When the lag was last reported.
    reported: Option<Instant>,
}

impl KafkaSource {
    fn uid(&self) -> &str {
        &self.config.client.uid
    }

    /// The partitions of the source's topics this subtask reads, from the brokers' metadata of
    /// all topics (asking for one by name would have brokers that create topics on demand
    /// create it). At the start (`first`) a topic that does not exist or cannot be read is an
    /// error; later, a failed request leaves the partitions as they are.
    fn owned_partitions(&self, first: bool) -> Result<Vec<Partition>, String> {
        let metadata = match self.consumer.fetch_metadata(None, REQUEST_TIMEOUT) {
            Ok(metadata) => metadata,
            Err(e) if first => {
                // Client errors reach the context when the consumer is polled: the reason comes there.
                let cause = self.consumer.context().cause(|wait| {
                    let _ = self.consumer.poll(wait);
                });
                return Err(format!(
                    "source '{}': cannot read the topics of the kafka brokers at {}: {e}{cause}",
                    self.uid(),
                    self.config.client.bootstrap_servers,
                ));
            }
            Err(_) => return Ok(self.next.keys().cloned().collect()),
        };
        let mut owned = Vec::new();
        for topic in &self.config.topics {
            let found = metadata.topics().iter().find(|t| t.name() == topic);
            let error = match found {
                None => Some("it does not exist (create it first)".to_string()),
                Some(t) => t.error().map(|e| RDKafkaErrorCode::from(e).to_string()),
            };
            if let Some(error) = error {
                if first {
                    return Err(format!("source '{}': topic '{topic}': {error}", self.uid()));
                }
                continue;
            }
            let parallelism = self.info.parallelism;
            owned.extend(
                found
                    .iter()
                    .flat_map(|t| t.partitions())
                    .map(|p| p.id())
                    .filter(|&p| owner(topic, p, parallelism) == self.info.index)
                    .map(|p| (topic.clone(), p)),
            );
        }
        Ok(owned)
    }

    /// Starts reading `partitions` that are not read yet: at the offset `resumed` holds, else
    /// where the job file says (at the start) or from the beginning (discovered later, or new
    /// since the checkpoint). Every start is resolved to a number, so that positions are exact.
    fn add(&mut self, partitions: Vec<Partition>, resumed: Option<&Offsets>) -> Result<(), String> {
        let new: Vec<Partition> = partitions.into_iter().filter(|p| !self.next.contains_key(p)).collect();
        if new.is_empty() {
            return Ok(());
        }
        let first = self.next.is_empty() && self.stop.is_empty();
        let start_from = match resumed {
            Some(_) => StartFrom::Earliest,
            None if first => self.config.start_from.clone(),
            None => StartFrom::Earliest,
        };
        let starts = self.start_offsets(&new, &start_from, resumed)?;
        let mut assignment = TopicPartitionList::new();
        for (partition, start) in new.iter().zip(starts) {
            if self.config.bounded {
                let stop = match resumed.and_then(|r| Offsets::get(&r.stop, partition)) {
                    Some(stop) => stop,
                    None => self.watermarks(partition)?.1,
                };
                self.stop.insert(partition.clone(), stop);
            }
            self.next.insert(partition.clone(), start);
            assignment
                .add_partition_offset(&partition.0, partition.1, Offset::Offset(start))
                .map_err(|e| format!("source '{}': {e}", self.uid()))?;
        }
        self.consumer
            .incremental_assign(&assignment)
            .map_err(|e| format!("source '{}': cannot assign partitions: {e}", self.uid()))?;
        // A partition already at its stop is not read at all.
        self.pause_finished();
        Ok(())
    }

    /// The low and high watermarks of `partition`.
    fn watermarks(&self, (topic, partition): &Partition) -> Result<(i64, i64), String> {
        self.consumer.fetch_watermarks(topic, *partition, REQUEST_TIMEOUT).map_err(|e| {
            format!("source '{}': cannot read the offsets of topic '{topic}' partition {partition}: {e}", self.uid())
        })
    }

    fn start_offsets(
        &self,
        partitions: &[Partition],
        start_from: &StartFrom,
        resumed: Option<&Offsets>,
    ) -> Result<Vec<i64>, String> {
        let mut starts = Vec::with_capacity(partitions.len());
        let committed = match start_from {
            StartFrom::Committed => {
                Some(self.lookup(partitions, |list| self.consumer.committed_offsets(list.clone(), REQUEST_TIMEOUT))?)
            }
            StartFrom::Timestamp(ms) => Some(self.lookup(partitions, |list| {
                let mut times = TopicPartitionList::new();
                for element in list.elements() {
                    times.add_partition_offset(element.topic(), element.partition(), Offset::Offset(*ms))?;
                }
                self.consumer.offsets_for_times(times, REQUEST_TIMEOUT)
            })?),
            _ => None,
        };
        for (i, partition) in partitions.iter().enumerate() {
            let (low, high) = self.watermarks(partition)?;
            if let Some(offset) = resumed.and_then(|r| Offsets::get(&r.next, partition)) {
                starts.push(self.checked_resume(partition, offset, (low, high))?);
                continue;
            }
            starts.push(match (start_from, committed.as_ref().map(|c| c[i])) {
                (StartFrom::Latest, _) => high,
                (_, Some(Offset::Offset(n))) => n.clamp(low, high),
                // No committed offset, or no record at or after the time: the end of the log for
                // a time, the beginning for a group without offsets.
                (StartFrom::Timestamp(_), _) => high,
                _ => low,
            });
        }
        Ok(starts)
    }

    /// Where `partition` resumes, restored at `offset`: there when it is within the partition's
    /// log (`low` to `high`); else where `offset-reset` says, or an error. An offset past the end
    /// would wait for records the log never numbers so (the topic was recreated, or its records
    /// deleted), skipping every record produced meanwhile; one before the start has lost records.
    fn checked_resume(
        &self,
        (topic, partition): &Partition,
        offset: i64,
        (low, high): (i64, i64),
    ) -> Result<i64, String> {
        if (low..=high).contains(&offset) {
            return Ok(offset);
        }
        let uid = self.uid();
        let reset = match &self.config.offset_reset {
            Some(StartFrom::Latest) => high,
            Some(_) => low,
            None => {
                return Err(format!(
                    "source '{uid}': the restored offset {offset} of topic '{topic}' partition {partition} is outside \
                     the partition's log, which holds offsets {low} to {high} (the topic was recreated, or records \
                     were deleted, since the checkpoint or savepoint was taken); set offset-reset = \"earliest\" or \
                     \"latest\" on the source to start such a partition there, or restore from a snapshot of this log"
                ));
            }
        };
        tracing::warn!(
            "source '{uid}': the restored offset {offset} of topic '{topic}' partition {partition} is outside its log \
             ({low} to {high}); starting at {reset}, as offset-reset says"
        );
        Ok(reset)
    }

    /// Offsets of `partitions` answered by `request` (committed offsets, offsets for times).
    fn lookup(
        &self,
        partitions: &[Partition],
        request: impl Fn(&TopicPartitionList) -> Result<TopicPartitionList, KafkaError>,
    ) -> Result<Vec<Offset>, String> {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        let answer = request(&list).map_err(|e| format!("source '{}': cannot look up offsets: {e}", self.uid()))?;
        Ok(partitions
            .iter()
            .map(|(t, p)| answer.find_partition(t, *p).map_or(Offset::Invalid, |e| e.offset()))
            .collect())
    }

    /// Stops fetching the partitions that have reached their stop offsets.
    fn pause_finished(&self) {
        let mut done = TopicPartitionList::new();
        for (partition, stop) in &self.stop {
            if self.next.get(partition).is_some_and(|next| next >= stop) {
                done.add_partition(&partition.0, partition.1);
            }
        }
        if done.count() > 0 {
            let _ = self.consumer.pause(&done);
        }
    }

    /// Bounded: whether every partition has reached its stop.
    fn finished(&self) -> bool {
        self.config.bounded && self.stop.iter().all(|(p, stop)| self.next.get(p).is_some_and(|next| next >= stop))
    }

    /// Looks for new partitions when the discovery interval has passed.
    fn discover(&mut self) -> Result<(), String> {
        let Some(interval) = self.config.discovery.filter(|_| !self.config.bounded) else { return Ok(()) };
        if self.discovered.elapsed() < interval {
            return Ok(());
        }
        self.discovered = Instant::now();
        let partitions = self.owned_partitions(false)?;
        self.add(partitions, None)
    }
}

impl Source for KafkaSource {
    fn poll(&mut self, out: &mut EventBatch, max: usize) -> Result<bool, String> {
        if let Some(fatal) = self.consumer.context().fatal_error() {
            return Err(format!("source '{}': {fatal}", self.uid()));
        }
        self.discover()?;
        if self.finished() {
            return Ok(false);
        }
        // The first record may be waited for a little (barriers are injected between polls);
        // the rest of the batch takes what librdkafka has already fetched.
        let mut wait = Duration::from_millis(100);
        while out.len() < max && !out.is_full() {
            let Some(result) = self.consumer.poll(wait) else { break };
            wait = Duration::ZERO;
            let message = match result {
                Ok(message) => message,
                Err(KafkaError::MessageConsumption(code)) if !fatal(code) => {
                    self.consumer.context().report(format!("{code}"));
                    break;
                }
                Err(e) => return Err(format!("source '{}': {e}", self.uid())),
            };
            let partition = (message.topic().to_string(), message.partition());
            let Some(next) = self.next.get_mut(&partition) else { continue };
            if message.offset() < *next {
                continue; // fetched before a seek; already read
            }
            *next = message.offset() + 1;
            let at = || {
                format!(
                    "the record at offset {} of topic '{}' partition {}",
                    message.offset(),
                    partition.0,
                    partition.1
                )
            };
            let Some(value) = message.payload() else {
                return Err(format!(
                    "source '{}': {} is a tombstone (a key without a value, which compacted topics use to delete \
                     the key): weir passes on events with values; leave tombstones out of the topics a job reads",
                    self.uid(),
                    at()
                ));
            };
            let size = value.len() + message.key().map_or(0, <[u8]>::len);
            if size > MAX_EVENT_BYTES {
                return Err(format!(
                    "source '{}': {} has {size} bytes of key and value, more than {} MiB, the largest event weir \
                     passes on",
                    self.uid(),
                    at(),
                    MAX_EVENT_BYTES >> 20
                ));
            }
            out.push(Event { key: message.key(), value, timestamp: message.timestamp().to_millis() });
            if self.stop.get(&partition).is_some_and(|stop| *next >= *stop) {
                self.pause_finished();
                if self.finished() {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn position(&self) -> Position {
        let mut offsets = Offsets::default();
        for (partition, next) in &self.next {
            Offsets::set(&mut offsets.next, partition, *next);
        }
        for (partition, stop) in &self.stop {
            Offsets::set(&mut offsets.stop, partition, *stop);
        }
        Position::json(&offsets)
    }

    fn checkpoint_completed(&mut self, position: &Position) {
        let Ok(offsets) = Offsets::read(position, self.uid()) else { return };
        let mut list = TopicPartitionList::new();
        for (topic, partitions) in &offsets.next {
            for (partition, next) in partitions {
                let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*next));
            }
        }
        if list.count() > 0 {
            // For monitoring tools only: weir resumes from its checkpoints.
            let _ = self.consumer.commit(&list, CommitMode::Async);
        }
    }

    fn status(&mut self) -> Option<serde_json::Value> {
        if self.reported.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return None;
        }
        self.reported = Some(Instant::now());
        let high = self.consumer.context().high_watermarks.lock().map(|h| h.clone()).unwrap_or_default();
        let partitions: Vec<serde_json::Value> = self
            .next
            .iter()
            .map(|(partition, next)| {
                let (topic, id) = partition;
                let lag = high.get(partition).map(|high| (high - next).max(0));
                serde_json::json!({ "topic": topic, "partition": id, "offset": next, "lag": lag })
            })
            .collect();
        let mut status = serde_json::json!({ "partitions": partitions });
        if let Some(error) = self.consumer.context().recent_error() {
            status["error"] = error.into();
        }
        Some(status)
    }
}

/// Errors of a fetch that retrying will not cure.
fn fatal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::OffsetOutOfRange
            | RDKafkaErrorCode::Authentication
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every partition has one owner, and partitions spread evenly over the subtasks.
    #[test]
    fn partitions_are_spread_over_subtasks_by_topic_and_partition_alone() {
        for parallelism in 1..=5 {
            let mut per_subtask = vec![0; parallelism as usize];
            for partition in 0..10 {
                per_subtask[owner("clicks", partition, parallelism) as usize] += 1;
            }
            let (least, most) = (per_subtask.iter().min().unwrap(), per_subtask.iter().max().unwrap());
            assert!(most - least <= 1, "{parallelism} subtasks: {per_subtask:?}");
        }
    }

    /// Positions recorded by any number of subtasks merge into one that has every partition.
    #[test]
    fn positions_of_all_subtasks_merge() {
        let position = |next: &[(i32, i64)]| {
            let mut offsets = Offsets::default();
            for &(partition, offset) in next {
                Offsets::set(&mut offsets.next, &("t".to_string(), partition), offset);
                Offsets::set(&mut offsets.stop, &("t".to_string(), partition), 100);
            }
            Position(serde_json::to_vec(&offsets).unwrap())
        };
        let factory = KafkaSourceFactory::new(KafkaSourceConfig {
            client: KafkaClient { uid: "k".into(), bootstrap_servers: String::new(), properties: BTreeMap::new() },
            topics: vec!["t".into()],
            start_from: StartFrom::Earliest,
            offset_reset: None,
            bounded: true,
            group_id: "g".into(),
            discovery: None,
            rate: None,
        });
        let merged = factory.merge_positions("k", &[position(&[(0, 5), (2, 7)]), position(&[(1, 9)])]).unwrap();
        let merged = Offsets::read(&merged, "k").unwrap();
        assert_eq!(merged.next["t"], BTreeMap::from([(0, 5), (1, 9), (2, 7)]));
        assert_eq!(merged.stop["t"].len(), 3);
        let error = factory.merge_positions("k", &[Position(3u64.to_le_bytes().to_vec())]).unwrap_err();
        assert!(error.contains("source 'k' cannot resume") && error.contains("not a kafka source's"), "{error}");
    }
}
