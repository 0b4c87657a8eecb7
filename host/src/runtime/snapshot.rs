//! What barriers carry and leave behind: operator snapshots, source positions and sinks' committed
//! output, where checkpoints and savepoints are stored, and how often checkpoints are taken.
use std::sync::Arc;

/// An operator subtask's keyed state at a barrier.
pub struct StateSnapshot {
    /// The key groups it covers, so that a restore reads only the snapshots it needs.
    pub key_groups: std::ops::Range<u32>,
    /// What is stored.
    pub body: SnapshotBody,
}

/// The state in a [`StateSnapshot`]: copied at the barrier, or frozen there.
pub enum SnapshotBody {
    /// The snapshot file (the checkpoint snapshot format) without its checksum trailer, which
    /// the checkpoint sink adds on the uploader thread.
    Encoded(Vec<u8>),
    /// The backend itself, frozen at the barrier, for the uploader thread to encode; the states
    /// it holds, as the file records them.
    Frozen(crate::state::overlay::FrozenState, Vec<crate::state::StateDescriptor>),
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
    /// Path relative to the checkpoint's directory.
    pub file: String,
    /// The key groups it covers.
    pub key_groups: std::ops::Range<u32>,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
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
    pub position: u64,
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
    /// Stores one operator subtask's snapshot of checkpoint `id` (on an uploader thread).
    fn write_state(&self, id: u64, uid: &str, subtask: u32, snapshot: StateSnapshot) -> Result<StateFile, String>;
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
    /// Told the outcome: the savepoint's barrier id, or why it failed.
    pub done: Box<dyn FnOnce(Result<u64, String>) + Send>,
}
