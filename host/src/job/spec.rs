//! The job file (TOML, kebab-case keys), as written by users. Unknown keys are errors, so a typo
//! never silently falls back to a default.
use std::time::Duration;

use serde::Deserialize;

/// The longest duration a job file may set: longer ones are typos, and would overflow timers.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration such as "500ms" or "10s" of at most [`MAX_DURATION`]; `None` otherwise.
pub fn duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text).ok().filter(|d| *d <= MAX_DURATION)
}

/// The most events per second a source may be limited to, and the fewest.
pub const RATE_RANGE: std::ops::RangeInclusive<f64> = 0.001..=1e12;

/// A whole job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobSpec {
    /// The job's name.
    pub name: String,
    /// Default parallelism of operators and generator sources.
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    /// Number of key groups: the most any keyed operator can ever be scaled to.
    #[serde(default = "default_max_parallelism")]
    pub max_parallelism: u32,
    /// `[[source]]` tables.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceSpec>,
    /// `[[operator]]` tables: the straight line's order, unless `inputs` say otherwise.
    #[serde(default, rename = "operator")]
    pub operators: Vec<OperatorSpec>,
    /// `[[sink]]` tables.
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkSpec>,
    /// `[checkpointing]`: absent, or an interval of 0, means off.
    pub checkpointing: Option<CheckpointingSpec>,
    /// `[restart]`: what happens when a subtask fails.
    pub restart: Option<RestartSpec>,
    /// `[upgrade]`: how an upgrade guards against a broken new module.
    pub upgrade: Option<UpgradeSpec>,
    /// `[state]`: where operators keep their keyed state.
    #[serde(default)]
    pub state: StateSpec,
}

/// The state backends (Flink's names: `hashmap` is `memory` here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendType {
    /// In memory: fastest, for state that fits in memory.
    #[default]
    Memory,
    /// RocksDB on local disk: state larger than memory.
    Rocksdb,
}

/// The `[state]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StateSpec {
    /// `memory` (default) or `rocksdb`.
    #[serde(default)]
    pub backend: BackendType,
    /// RocksDB: the working directory of the live databases (default "weir-data/rocksdb",
    /// relative to the job file); each job uses a directory of its own inside.
    pub local_dir: Option<String>,
    /// RocksDB: block cache and write buffers of the whole job, shared by its subtasks
    /// (default "256MiB").
    pub managed_memory: Option<String>,
    /// RocksDB: checkpoints store only the SST files earlier ones did not (default false).
    pub incremental: Option<bool>,
}

/// The `[upgrade]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UpgradeSpec {
    /// A failure this soon after a swap rolls the job back to the modules it ran before, from
    /// the upgrade's savepoint (default "30s"; "0s" turns rollbacks off).
    pub rollback_window: Option<String>,
    /// ... and before the new modules have processed this many events (default: no limit).
    pub rollback_window_events: Option<u64>,
}

/// Checkpoint consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointMode {
    /// Barriers are aligned: each checkpoint holds exactly the effects of the events before it.
    #[default]
    ExactlyOnce,
    /// Barriers are not aligned: faster, but a restore may replay some events twice.
    AtLeastOnce,
}

/// What happens to a job's checkpoints when it is canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Retention {
    /// Canceling deletes them (they are kept when the job fails or finishes).
    #[default]
    DeleteOnCancellation,
    /// They are always kept.
    RetainOnCancellation,
}

/// The `[checkpointing]` table, with Flink's names and defaults. Durations are strings such as
/// "500ms" or "10m".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckpointingSpec {
    /// Time between checkpoints, e.g. "1s"; "0s" turns checkpointing off.
    pub interval: String,
    /// `exactly-once` (default) or `at-least-once`.
    #[serde(default)]
    pub mode: CheckpointMode,
    /// A checkpoint not complete after this long fails (default "10m").
    pub timeout: Option<String>,
    /// Least time between the end of one checkpoint and the start of the next (default "0s").
    pub min_pause: Option<String>,
    /// Most checkpoints in progress at once (default 1).
    pub max_concurrent: Option<u32>,
    /// Consecutive failed checkpoints the job survives (default 0).
    pub tolerable_failures: Option<u32>,
    /// Completed checkpoints kept (default 1).
    pub retained: Option<u32>,
    /// Whether canceling the job deletes its checkpoints (default: it does).
    #[serde(default)]
    pub retention: Retention,
    /// Where checkpoints go (default `file://weir-data/checkpoints`, relative to the job file).
    pub storage: Option<String>,
    /// Where savepoints go when none is named (default `file://weir-data/savepoints`).
    pub savepoint_dir: Option<String>,
}

/// Restart strategies, as Flink's `restart-strategy.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartStrategyType {
    /// A failure fails the job.
    None,
    /// Up to `attempts` restarts, `delay` apart.
    FixedDelay,
    /// Restarts with a growing delay, without limit unless `attempts` is set.
    ExponentialDelay,
    /// Restarts while fewer than `max-failures-per-interval` failures fall in `failure-rate-interval`.
    FailureRate,
}

/// The `[restart]` table: Flink's `restart-strategy.*` options without the prefix. Settings of
/// another strategy than the chosen one are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestartSpec {
    /// Default: `exponential-delay` when checkpointing, else `none`.
    pub strategy: Option<RestartStrategyType>,
    /// fixed-delay: restarts before the job fails (default 1).
    pub attempts: Option<u32>,
    /// exponential-delay: restarts without a reset of the backoff before the job fails
    /// (default unlimited).
    pub attempts_before_reset_backoff: Option<u32>,
    /// fixed-delay and failure-rate: time before a restart (default "1s").
    pub delay: Option<String>,
    /// exponential-delay: the first delay (default "1s").
    pub initial_backoff: Option<String>,
    /// exponential-delay: the longest delay (default "1min").
    pub max_backoff: Option<String>,
    /// exponential-delay: growth per failure (default 1.5).
    pub backoff_multiplier: Option<f64>,
    /// exponential-delay: a job running this long without failure starts from the initial
    /// backoff again (default "1h").
    pub reset_backoff_threshold: Option<String>,
    /// exponential-delay: random spread of each delay, as a fraction (default 0.1).
    pub jitter_factor: Option<f64>,
    /// failure-rate: failures allowed per interval (default 1).
    pub max_failures_per_interval: Option<u32>,
    /// failure-rate: the interval (default "1min").
    pub failure_rate_interval: Option<String>,
}

fn default_parallelism() -> u32 {
    1
}

fn default_max_parallelism() -> u32 {
    crate::key_group::DEFAULT_MAX_PARALLELISM
}

/// Source types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceType {
    /// One event per line of a file.
    File,
    /// Synthetic keyed events.
    Generator,
    /// Records of Kafka topics.
    Kafka,
}

/// A `[[source]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceSpec {
    /// Stable id.
    pub uid: String,
    /// `file` or `generator`.
    #[serde(rename = "type")]
    pub kind: SourceType,
    /// File sources: the file, relative to the job file.
    pub path: Option<String>,
    /// Generator sources: how many events (unbounded when absent).
    pub count: Option<u64>,
    /// Generator sources: how many distinct keys (default 1000).
    pub keys: Option<u64>,
    /// Events per second over all subtasks.
    pub rate: Option<f64>,
    /// Subtasks (generator and kafka; a file source has one).
    pub parallelism: Option<u32>,
    /// Kafka: the brokers to first connect to, `host:port[,host:port…]`.
    pub bootstrap_servers: Option<String>,
    /// Kafka: the topic to read.
    pub topic: Option<String>,
    /// Kafka: the topics to read, instead of one `topic`.
    pub topics: Option<Vec<String>>,
    /// Kafka: `earliest` (default), `latest`, `committed` or an RFC 3339 time.
    pub start_from: Option<String>,
    /// Kafka: `latest` makes the source bounded, ending at the offsets it finds when it starts.
    pub stop_at: Option<String>,
    /// Kafka: where a partition whose restored offset is outside its log starts, `earliest` or
    /// `latest` (Flink's `OffsetResetStrategy`); unset, such an offset fails the job.
    pub offset_reset: Option<String>,
    /// Kafka: the consumer group offsets are committed to when checkpoints complete.
    pub group_id: Option<String>,
    /// Kafka: how often new partitions are looked for (default "30s"; "0s": never).
    pub partition_discovery: Option<String>,
    /// Kafka: librdkafka properties passed through as they are.
    pub properties: Option<std::collections::BTreeMap<String, toml::Value>>,
    /// Kafka: the environment variable holding the SASL password (`sasl.password`).
    pub password_env: Option<String>,
    /// File: the JSON field of each line holding its event time, in milliseconds.
    pub timestamp_field: Option<String>,
    /// File: `lines` (default: each line an event's value) or `quarantine` (each line a quarantine
    /// record, whose event it gives back: key, value and timestamp; `docs/quarantine.md`).
    pub format: Option<String>,
    /// Generator: event i's timestamp is i times this, in whole milliseconds ("1ms", or "1us" for
    /// 1,000 events a millisecond).
    pub event_time_step: Option<String>,
    /// Watermarks generated from the timestamps of the events it reads.
    pub watermarks: Option<WatermarksSpec>,
}

/// `watermarks = { out-of-orderness = "5s", idle-timeout = "1m" }` on a source or an operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WatermarksSpec {
    /// How far behind the latest timestamp an event may come without being late (default "0s").
    pub out_of_orderness: Option<String>,
    /// Sources: how long without an event before a subtask stops holding the watermark back.
    pub idle_timeout: Option<String>,
}

/// How an operator's input is partitioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputSpec {
    /// Same subtask, or round-robin when parallelisms differ.
    #[default]
    Forward,
    /// By key group of the event key (Flink's keyBy); gives the operator keyed state.
    Hash,
}

/// One input of an operator or sink: `{ from = "clicks", partitioning = "hash" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EdgeSpec {
    /// A source's or an operator's uid, or an operator's side output (`"uid.output"`).
    pub from: String,
    /// How the stream is spread over the reader's subtasks (default `forward`).
    #[serde(default)]
    pub partitioning: PartitioningSpec,
}

/// How a stream is spread over the subtasks that read it (Flink's partitioners).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitioningSpec {
    /// Subtask i feeds subtask i; round-robin when the parallelisms differ.
    #[default]
    Forward,
    /// By key group of the event key (Flink's keyBy); gives an operator keyed state.
    Hash,
    /// Whole batches to each reading subtask in turn.
    Rebalance,
    /// Every event to every reading subtask.
    Broadcast,
}

/// An `[[operator]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OperatorSpec {
    /// Stable id: state is matched to operators by it.
    pub uid: String,
    /// Path of the component, relative to the job file.
    pub module: Option<String>,
    /// A native operator compiled into the host instead of a module.
    pub builtin: Option<String>,
    /// Passed to the operator's `open` as a JSON object.
    pub config: Option<toml::Table>,
    /// Input partitioning of the straight line's input (instead of `inputs`; default `forward`).
    pub input: Option<InputSpec>,
    /// What it reads, each stream with its partitioning (default: the straight line).
    pub inputs: Option<Vec<EdgeSpec>>,
    /// Subtasks (default: the job's parallelism).
    pub parallelism: Option<u32>,
    /// Longest one guest call may run, e.g. "500ms" (default 10s).
    pub call_deadline: Option<String>,
    /// Most linear memory per instance, e.g. "64MiB" (default 256MiB).
    pub memory_limit: Option<String>,
    /// Most keyed state each subtask keeps in host memory, e.g. "4GiB" (default 1GiB).
    pub state_limit: Option<String>,
    /// Watermarks generated from the timestamps of the events it emits, instead of its inputs'.
    pub watermarks: Option<WatermarksSpec>,
    /// A canary: another module serving a share of the key groups beside `module`
    /// (`weir upgrade --canary` writes it; `docs/upgrades.md`, *Canaries*).
    pub canary: Option<CanarySpec>,
    /// What a failed guest call does: fail the job (default) or set the failing events aside on
    /// the side output `quarantine` (`docs/quarantine.md`).
    pub on_error: Option<OnErrorSpec>,
}

/// `on-error = "quarantine"`, or `on-error = { action = "quarantine", max-per-minute = 100,
/// max-total = 1000 }` on an operator.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct OnErrorSpec {
    /// What a failed call does.
    pub action: OnErrorAction,
    /// Most events set aside in any minute, over all its subtasks (default 100).
    pub max_per_minute: Option<u64>,
    /// Most events set aside by one run of the job (default: no bound).
    pub max_total: Option<u64>,
}

/// What a failed guest call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnErrorAction {
    /// The job fails, and its restart strategy takes over (as in Flink).
    Fail,
    /// The events that make the call fail are isolated and set aside; the rest go on.
    Quarantine,
}

impl TryFrom<toml::Value> for OnErrorSpec {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<Self, String> {
        let action = |text: &str| match text {
            "fail" => Ok(OnErrorAction::Fail),
            "quarantine" => Ok(OnErrorAction::Quarantine),
            other => Err(format!("`on-error` \"{other}\" is not \"fail\" or \"quarantine\"")),
        };
        let count = |key: &str, value: &toml::Value| match value.as_integer() {
            Some(n) if n >= 1 => Ok(n as u64),
            _ => Err(format!("`on-error`'s `{key}` must be a whole number of events, at least 1")),
        };
        match value {
            toml::Value::String(text) => {
                Ok(OnErrorSpec { action: action(&text)?, max_per_minute: None, max_total: None })
            }
            toml::Value::Table(table) => {
                let mut spec = OnErrorSpec { action: OnErrorAction::Fail, max_per_minute: None, max_total: None };
                let mut named = false;
                for (key, value) in &table {
                    match key.as_str() {
                        "action" => {
                            let text =
                                value.as_str().ok_or("`on-error`'s `action` must be \"fail\" or \"quarantine\"")?;
                            spec.action = action(text)?;
                            named = true;
                        }
                        "max-per-minute" => spec.max_per_minute = Some(count(key, value)?),
                        "max-total" => spec.max_total = Some(count(key, value)?),
                        other => {
                            return Err(format!(
                                "`on-error` has no setting `{other}` (it takes `action`, `max-per-minute` and `max-total`)"
                            ));
                        }
                    }
                }
                if !named {
                    return Err("`on-error` needs `action = \"quarantine\"` (or \"fail\")".to_string());
                }
                Ok(spec)
            }
            _ => Err("`on-error` is \"fail\", \"quarantine\" or a table such as { action = \"quarantine\", \
                      max-per-minute = 100 }"
                .to_string()),
        }
    }
}

impl OperatorSpec {
    /// Whether it reads a stream by key, which gives it keyed state.
    pub fn keyed(&self) -> bool {
        self.input == Some(InputSpec::Hash)
            || self.inputs.iter().flatten().any(|edge| edge.partitioning == PartitioningSpec::Hash)
    }

    /// Whether it sets failing events aside instead of failing the job.
    pub fn quarantines(&self) -> bool {
        self.on_error.as_ref().is_some_and(|e| e.action == OnErrorAction::Quarantine)
    }
}

/// `canary = { module = "count_v2.wasm", share = "10%" }` on an operator: `module` serves the
/// first `share` of the key groups, the operator's own module the rest.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CanarySpec {
    /// The canary's module, as `module` names one.
    pub module: String,
    /// Its share of the key groups: a percentage such as "10%".
    pub share: String,
    /// Conditions that abort it by themselves as soon as one holds (`errors>0`, `out-ratio<0.5`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abort_if: Vec<String>,
    /// How it aborts then (default: hand-back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_by: Option<CanaryAbort>,
}

/// How an abort gives a canary's key groups back to the operator's own module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CanaryAbort {
    /// With the state the canary left them (refused when the canary changed a state's layout,
    /// which the operator's module cannot read).
    HandBack,
    /// The whole job goes back to the savepoint taken when the canary started, with the modules
    /// it ran then (its output since is written again, exactly once).
    Rollback,
}

/// Sink types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkType {
    /// A directory of part files.
    File,
    /// Standard output.
    Stdout,
    /// Discards events.
    Blackhole,
    /// Rows of a PostgreSQL table.
    Postgres,
    /// Records of a Kafka topic.
    Kafka,
}

/// How a `postgres` sink writes rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresModeSpec {
    /// One row per event.
    #[default]
    Append,
    /// One row per key (`key-columns`), updated.
    Upsert,
}

/// A `[[sink]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SinkSpec {
    /// Stable id.
    pub uid: String,
    /// `file`, `stdout` or `blackhole`.
    #[serde(rename = "type")]
    pub kind: SinkType,
    /// File sinks: the output directory, relative to the job file.
    pub path: Option<String>,
    /// Postgres sinks: `postgres://user@host:port/database`, without a password.
    pub url: Option<String>,
    /// Postgres and kafka sinks: the environment variable holding the password.
    pub password_env: Option<String>,
    /// Postgres sinks: the table (`table` or `schema.table`).
    pub table: Option<String>,
    /// Postgres sinks: each column and the field of the event's JSON value it takes.
    pub columns: Option<std::collections::BTreeMap<String, String>>,
    /// Postgres sinks: `append` (default) or `upsert`.
    pub mode: Option<PostgresModeSpec>,
    /// Postgres sinks, upsert: the columns of the table's primary key or unique constraint.
    pub key_columns: Option<Vec<String>>,
    /// Postgres sinks: the longest one statement may run or wait for a lock (default 30s).
    pub statement_timeout: Option<String>,
    /// Kafka sinks: the brokers to first connect to.
    pub bootstrap_servers: Option<String>,
    /// Kafka sinks: the topic written to.
    pub topic: Option<String>,
    /// Kafka sinks: `at-least-once` (default); `exactly-once` is refused (see the README).
    pub delivery: Option<String>,
    /// Kafka sinks: librdkafka properties passed through as they are.
    pub properties: Option<std::collections::BTreeMap<String, toml::Value>>,
    /// What it writes (default: what the last operator emits, or the sources without operators).
    pub inputs: Option<Vec<EdgeSpec>>,
}
