//! What the executor runs: vertices (sources, operators, sinks) with their parallelism, and the
//! traits their subtasks implement.
use std::fmt;
use std::sync::Arc;

use super::batch::EventBatch;

/// Where a subtask runs; passed to factories.
#[derive(Debug, Clone)]
pub struct SubtaskInfo {
    /// The vertex's uid.
    pub uid: Arc<str>,
    /// Index of this subtask, from 0.
    pub index: u32,
    /// The vertex's parallelism.
    pub parallelism: u32,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// Start attempt of the job, from 0.
    pub attempt: u32,
    /// Set when the subtask must stop at once (the job is cancelled, or the attempt failed):
    /// long calls (a guest's) check it.
    pub interrupt: Interrupt,
}

/// Flags that tell a running subtask to stop: the job's cancel request, and its attempt's end.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    flags: [Arc<std::sync::atomic::AtomicBool>; 2],
}

impl Interrupt {
    /// Raised when either flag is.
    pub fn new(cancel: Arc<std::sync::atomic::AtomicBool>, stop: Arc<std::sync::atomic::AtomicBool>) -> Self {
        Interrupt { flags: [cancel, stop] }
    }

    /// Whether the subtask must stop.
    pub fn is_raised(&self) -> bool {
        self.flags.iter().any(|f| f.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl fmt::Display for SubtaskInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' subtask {}/{}", self.uid, self.index + 1, self.parallelism)
    }
}

/// What a vertex is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VertexKind {
    /// It reads events from outside.
    Source,
    /// It runs an operator.
    Operator,
    /// It writes events out.
    Sink,
}

impl fmt::Display for VertexKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that widths in format strings apply (the run summary aligns on them).
        f.pad(match self {
            VertexKind::Source => "source",
            VertexKind::Operator => "operator",
            VertexKind::Sink => "sink",
        })
    }
}

/// A failure of one subtask, as the user sees it: which vertex, which subtask, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind} {subtask}: {cause}")]
pub struct TaskError {
    /// What the vertex is.
    pub kind: VertexKind,
    /// The failing subtask.
    pub subtask: SubtaskInfo,
    /// What went wrong.
    pub cause: String,
}

/// A running source subtask.
pub trait Source: Send {
    /// Appends up to `max` events to `out`; returns false once the source is exhausted.
    fn poll(&mut self, out: &mut EventBatch, max: usize) -> Result<bool, String>;
    /// Where the next poll starts (a file's byte offset, a generator's index): recorded with
    /// every checkpoint so that a restore can resume exactly there.
    fn position(&self) -> u64;
}

/// A running operator subtask.
pub trait Operator: Send {
    /// Processes a batch, appending what it emits to `out`.
    fn process(&mut self, input: &EventBatch, out: &mut EventBatch) -> Result<(), String>;
    /// The snapshot of its keyed state, or `None` when it keeps no state.
    fn snapshot(&self) -> Result<Option<StateSnapshot>, String>;
    /// The same, at the barrier of a stop whose state is handed over: nothing runs after it but
    /// the next run, so an operator that can freezes its state for the snapshot to be encoded off
    /// this thread and hands over an overlay instead of copying it (see [`crate::state::overlay`]).
    fn freeze(&mut self) -> Result<Option<StateSnapshot>, String> {
        self.snapshot()
    }
    /// Its keyed state itself, when the job stops for an upgrade: handed over in place to the
    /// subtask that replaces it. `None` when it keeps no state.
    fn into_state(self: Box<Self>) -> Option<Box<dyn crate::state::StateBackend>> {
        None
    }
}

/// Operator state handed over in place from one run of a job to the next (an upgrade): by uid
/// and subtask, with the key groups it covers.
#[derive(Default)]
pub struct Handover {
    states: std::sync::Mutex<std::collections::HashMap<(String, u32), HandedOver>>,
    /// The barrier of the stop, where each source stopped at it and what each sink had
    /// committed by it.
    stopped: std::sync::Mutex<Stopped>,
}

/// Where a job stopped for a handover.
#[derive(Default)]
pub struct Stopped {
    /// The stop's barrier id.
    pub id: u64,
    /// Each source subtask's position at it.
    pub positions: Vec<SourcePosition>,
    /// Each sink's committed output at it.
    pub sinks: Vec<SinkCommitted>,
}

type HandedOver = (std::ops::Range<u32>, Box<dyn crate::state::StateBackend>);

impl Handover {
    /// Leaves subtask `subtask` of operator `uid`'s state, covering `key_groups`.
    pub fn put(
        &self,
        uid: &str,
        subtask: u32,
        key_groups: std::ops::Range<u32>,
        state: Box<dyn crate::state::StateBackend>,
    ) {
        if let Ok(mut states) = self.states.lock() {
            states.insert((uid.to_string(), subtask), (key_groups, state));
        }
    }

    /// Records where a source subtask stopped, at barrier `id`.
    pub fn put_position(&self, id: u64, position: SourcePosition) {
        if let Ok(mut stopped) = self.stopped.lock() {
            stopped.id = id;
            stopped.positions.push(position);
        }
    }

    /// Records what the sinks have committed by the stop's barrier.
    pub fn put_sinks(&self, sinks: Vec<SinkCommitted>) {
        if let Ok(mut stopped) = self.stopped.lock() {
            stopped.sinks = sinks;
        }
    }

    /// Takes where the job stopped.
    pub fn take_stopped(&self) -> Stopped {
        self.stopped.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
    }

    /// Takes what subtask `subtask` of operator `uid` left, if it covers exactly `key_groups`.
    pub fn take(
        &self,
        uid: &str,
        subtask: u32,
        key_groups: &std::ops::Range<u32>,
    ) -> Option<Box<dyn crate::state::StateBackend>> {
        let mut states = self.states.lock().ok()?;
        let key = (uid.to_string(), subtask);
        if states.get(&key).is_some_and(|(range, _)| range == key_groups) {
            return states.remove(&key).map(|(_, state)| state);
        }
        None
    }
}

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

/// A running sink subtask.
pub trait Sink: Send {
    /// Writes a batch.
    fn write(&mut self, batch: &EventBatch) -> Result<(), String>;
    /// At aligned barrier `id`: makes everything written so far durable, ready to be published
    /// when checkpoint `id` completes (the first phase of a two-phase commit). Sinks that cannot
    /// hold output back (stdout) do nothing: they are at-least-once.
    fn pre_commit(&mut self, _id: u64) -> Result<(), String> {
        Ok(())
    }
    /// Flushes everything once the input has ended.
    fn finish(&mut self) -> Result<(), String>;
}

/// Creates source subtasks.
pub trait SourceFactory: Send + Sync {
    /// Opens subtask `info`.
    fn create(&self, info: &SubtaskInfo) -> Result<Box<dyn Source>, String>;
    /// Events per second for the whole source (all subtasks), if limited.
    fn rate(&self) -> Option<f64>;
}

/// Creates operator subtasks.
pub trait OperatorFactory: Send + Sync {
    /// Opens subtask `info` (for a Wasm operator: instantiates the module and calls `open`).
    fn create(&self, info: &SubtaskInfo) -> Result<Box<dyn Operator>, String>;
}

/// Creates sink subtasks.
pub trait SinkFactory: Send + Sync {
    /// Opens subtask `info`.
    fn create(&self, info: &SubtaskInfo) -> Result<Box<dyn Sink>, String>;
    /// Publishes what every subtask pre-committed up to checkpoint `id`, once that checkpoint is
    /// complete (the second phase). Must be idempotent: a restore commits again.
    fn commit(&self, _id: u64) -> Result<(), String> {
        Ok(())
    }
    /// What the sink has committed once barrier `id` is, for the barrier's metadata: a restore
    /// from it hands this back to the sink it opens. `None` for sinks that keep no record.
    fn committed(&self, _id: u64) -> Option<serde_json::Value> {
        None
    }
}

/// How a vertex's input is distributed over its subtasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// Subtask i of the upstream feeds subtask i; when parallelisms differ, batches are spread
    /// round-robin (Flink's rebalance).
    Forward,
    /// By key group of the event key (Flink's keyBy).
    Hash,
}

/// One vertex of the graph.
pub struct Vertex<F: ?Sized> {
    /// Stable id from the job file.
    pub uid: Arc<str>,
    /// Number of subtasks.
    pub parallelism: u32,
    /// How input reaches the subtasks (ignored for sources).
    pub input: Partitioning,
    /// Creates the subtasks.
    pub factory: Box<F>,
}

/// A job: sources feed the first operator, each operator feeds the next, the last feeds every
/// sink. Several sources are a union; several sinks each get the whole stream.
pub struct JobGraph {
    /// The job's name.
    pub name: String,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// Start attempt, passed to every subtask.
    pub attempt: u32,
    /// Sources.
    pub sources: Vec<Vertex<dyn SourceFactory>>,
    /// Operators, in order.
    pub operators: Vec<Vertex<dyn OperatorFactory>>,
    /// Sinks.
    pub sinks: Vec<Vertex<dyn SinkFactory>>,
    /// Checkpointing, when enabled.
    pub checkpointing: Option<CheckpointConfig>,
}

/// What connects one run of a graph to the job it belongs to: set by whoever runs it (the job
/// registry), not by the job file, and the same for every run of the job.
pub struct RunHandles {
    /// Set from outside to cancel the job.
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
    /// Where the run's counts go, readable while it runs.
    pub metrics: Arc<super::JobMetrics>,
    /// Savepoints asked of the running job.
    pub savepoints: crossbeam_channel::Receiver<SavepointRequest>,
    /// Where operators leave their state when the job stops for an upgrade.
    pub handover: Arc<Handover>,
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
