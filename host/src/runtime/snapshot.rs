//! What barriers carry and leave behind: operator snapshots, source positions and sinks' committed
//! output, where checkpoints and savepoints are stored, and how often checkpoints are taken.
use std::sync::Arc;

use super::task::SubtaskInfo;

/// An operator subtask's keyed state at a barrier.
pub struct StateSnapshot {
    /// The key groups it covers, so that a restore reads only the snapshots it needs.
    pub key_groups: std::ops::Range<u32>,
    /// What is stored, in the form of the backend that made it.
    pub body: Box<dyn crate::state::SnapshotBody>,
    /// The operator's broadcast state: subtask 0 records it for all (see [`crate::state::broadcast`]).
    pub broadcast: Option<crate::state::broadcast::SavedBroadcast>,
    /// Set when the subtask runs more than one module, each over a part of its key groups (a
    /// canary, see [`crate::runtime::key_ranges`]): each part is stored in a file of its own, so
    /// that a restore reads each with the schema versions it was saved under.
    pub part: Option<SnapshotPart>,
}

/// What a snapshot of one part of a subtask's key groups records of the module that serves it.
#[derive(Debug, Clone, Default)]
pub struct SnapshotPart {
    /// The SHA-256 of the canary module that wrote it (`None`: the operator's own module).
    pub canary: Option<String>,
}

/// Checkpointing settings of a job run.
#[derive(Clone)]
pub struct CheckpointConfig {
    /// Time between checkpoints.
    pub interval: std::time::Duration,
    /// Align barriers (exactly-once) or not (at-least-once).
    pub exactly_once: bool,
    /// A checkpoint not complete after this long is abandoned (it counts as a failure).
    pub timeout: std::time::Duration,
    /// Least time from one checkpoint's end to the next one's start.
    pub min_pause: std::time::Duration,
    /// Most checkpoints in progress at once.
    pub max_concurrent: u32,
    /// Consecutive failed checkpoints the job survives; one more fails it.
    pub tolerable_failures: u32,
    /// The id of the first checkpoint: one past those already stored, so ids only grow.
    pub first_id: u64,
    /// Where snapshots and metadata go.
    pub sink: Arc<dyn CheckpointSink>,
}

/// One operator subtask's stored snapshot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StateFile {
    /// Operator uid.
    pub uid: String,
    /// Subtask index.
    pub subtask: u32,
    /// The key groups it covers.
    pub key_groups: std::ops::Range<u32>,
    /// What is stored, and where.
    #[serde(flatten)]
    pub stored: StoredState,
    /// The operator's broadcast state, recorded by subtask 0 alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<crate::state::broadcast::SavedBroadcast>,
    /// Written by the canary module of the operator (its SHA-256), over the key groups the
    /// canary serves: the canary's assignment, as checkpoints and savepoints keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
}

/// How a snapshot is stored: one file in the canonical form, or a disk backend's own files.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum StoredState {
    /// One file in the canonical form (`docs/savepoint-format.md`).
    Canonical {
        /// Its path relative to the checkpoint's (or savepoint's) directory.
        file: String,
        /// Hex SHA-256 of the file.
        sha256: String,
        /// Bytes.
        size: u64,
    },
    /// The files of a disk backend's database.
    Native(NativeState),
}

impl StoredState {
    /// Bytes of state it holds (for a native snapshot, of every file it references).
    pub fn size(&self) -> u64 {
        match self {
            StoredState::Canonical { size, .. } => *size,
            StoredState::Native(native) => native.files.iter().map(|f| f.size).sum(),
        }
    }
}

/// A snapshot stored in a disk backend's own format: the files of its database.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NativeState {
    /// The format ("rocksdb"): only a backend of that kind restores it.
    pub native: String,
    /// The directory of its files, beside `_metadata` (files with a `shared` name are in the
    /// job's `shared/` directory instead).
    pub dir: String,
    /// The states it holds, in the order its records index them.
    pub states: Vec<crate::state::StateDescriptor>,
    /// Every file of the database.
    pub files: Vec<NativeStoredFile>,
}

/// One file of a [`NativeState`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NativeStoredFile {
    /// Its name in the database's directory.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
    /// Set in incremental checkpoints for a file stored once in the job's `shared/` directory,
    /// under this name, and referenced by every checkpoint that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
}

/// One source subtask's position at a checkpoint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SourcePosition {
    /// Source uid.
    pub uid: String,
    /// Subtask index.
    pub subtask: u32,
    /// Where it resumes.
    pub position: Position,
}

/// Where a source subtask resumes, in a form only its source reads: a file's byte offset, a
/// generator's index, later a Kafka consumer's offset per partition. Opaque to the runtime and to
/// checkpoints, which store it as hex; `format-version` 1 savepoints stored a number, read here as
/// the little-endian `u64` sources of that time meant by it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position(pub Vec<u8>);

impl Position {
    /// A position that is a JSON value (the form sources keep now).
    pub fn json<T: serde::Serialize>(value: &T) -> Self {
        Position(serde_json::to_vec(value).unwrap_or_default())
    }

    /// Reads a position made by [`Position::json`]; `uid` and `kind` ("a kafka source's") name
    /// the source in the error for anything else.
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, uid: &str, kind: &str) -> Result<T, String> {
        serde_json::from_slice(&self.0).map_err(|_| {
            format!(
                "source '{uid}' cannot resume at the stored position {self}: it is not {kind} (did the \
                 source's type change? then start it without the checkpoint's positions)"
            )
        })
    }

    /// The number of an 8-byte position, the form file and generator sources kept before they
    /// rescaled (and `format-version` 1 savepoints stored): a byte offset, an index.
    pub fn legacy_number(&self) -> Option<u64> {
        Some(u64::from_le_bytes(self.0.as_slice().try_into().ok()?))
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl serde::Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Hex(String),
            Number(u64),
        }
        match Stored::deserialize(deserializer)? {
            Stored::Number(n) => Ok(Position(n.to_le_bytes().to_vec())),
            Stored::Hex(text) => hex::decode(&text)
                .map(Position)
                .map_err(|_| serde::de::Error::custom(format!("source position \"{text}\" is not hex"))),
        }
    }
}

/// What a sink had committed at a barrier, as the checkpoint or savepoint records it, so that a
/// restore from it brings back exactly that output (its form is the sink's own).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SinkCommitted {
    /// Sink uid.
    pub uid: String,
    /// The sink's record of its output.
    pub committed: serde_json::Value,
}

impl SinkCommitted {
    /// Whether the sink held output back at this barrier ([`crate::runtime::HELD_OUTPUT`]): the
    /// checkpoint is no point to resume from.
    pub fn held_output(&self) -> bool {
        self.committed.get(crate::runtime::HELD_OUTPUT) == Some(&serde_json::Value::Bool(true))
    }
}

/// What a completed checkpoint or savepoint holds.
#[derive(Default)]
pub struct Completed {
    /// Where each source subtask resumes.
    pub sources: Vec<SourcePosition>,
    /// Each stateful operator subtask's stored snapshot.
    pub states: Vec<StateFile>,
    /// What each sink had committed.
    pub sinks: Vec<SinkCommitted>,
}

/// Where checkpoints are stored: the runtime hands it snapshots and completed checkpoints.
pub trait CheckpointSink: Send + Sync {
    /// Stores one operator subtask's snapshot of checkpoint `id` (on an uploader thread);
    /// returns what `_metadata` records of it and the bytes this checkpoint uploaded for it
    /// (fewer than it holds when it shares files with earlier checkpoints).
    fn write_state(
        &self,
        id: u64,
        uid: &str,
        subtask: u32,
        snapshot: StateSnapshot,
    ) -> Result<(StateFile, u64), String>;
    /// Records checkpoint `id` as complete (its metadata is written last) and drops old ones.
    fn complete(&self, id: u64, completed: Completed) -> Result<(), String>;
}

/// A savepoint asked of a running job: it goes through the same barriers as checkpoints, into
/// its own directory, and is never deleted by weir.
pub struct SavepointRequest {
    /// Where it is stored.
    pub sink: Arc<dyn CheckpointSink>,
    /// Stop the job once it is complete (stop-with-savepoint): sources end at its barrier.
    pub stop: bool,
    /// With `stop`: operators leave their state, and sources their positions, in the job's
    /// handover, and the job ends as soon as every subtask has (the savepoint is stored behind,
    /// for a rollback): the next run starts from the handover, reading nothing back.
    pub handover: bool,
    /// With `stop`: sources send the end of time before the savepoint's barrier, so that every
    /// event-time timer fires and every window is emitted before it (Flink's `--drain`).
    pub drain: bool,
    /// Told the outcome: the savepoint's barrier id, or why it failed.
    pub done: Box<dyn FnOnce(Result<u64, String>) + Send>,
}

/// One subtask's acknowledgement of a barrier, as the checkpoint coordinator collects them.
pub(crate) struct TaskAck {
    pub(crate) uid: Arc<str>,
    pub(crate) subtask: u32,
    /// Sources: where they resume.
    pub(crate) position: Option<SourcePosition>,
    /// Operators with state: the stored snapshots (one, or one per part of its key groups).
    pub(crate) states: Vec<StateFile>,
    /// Sinks: what they pre-committed, for their factory to commit.
    pub(crate) committable: Option<serde_json::Value>,
    /// Timings and size, for the statistics.
    pub(crate) stats: super::checkpoint_stats::SubtaskCheckpoint,
}

impl TaskAck {
    /// An acknowledgement by subtask `info` that carries nothing yet.
    pub(crate) fn new(info: &SubtaskInfo) -> Self {
        let (position, states, committable, stats) = (None, Vec::new(), None, Default::default());
        TaskAck { uid: info.uid.clone(), subtask: info.index, position, states, committable, stats }
    }
}
