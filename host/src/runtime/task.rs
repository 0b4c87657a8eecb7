//! What runs in a subtask: where it runs ([`SubtaskInfo`]), how it fails ([`TaskError`]), and the
//! traits sources, operators and sinks implement, with the factories that open them.
use std::fmt;
use std::sync::Arc;

use super::batch::{Emitted, EventBatch};
use super::snapshot::{Position, StateSnapshot};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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

/// Why a job did not finish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobFailure {
    /// A subtask failed.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// The job was cancelled before its sources ended.
    #[error("job was cancelled")]
    Cancelled,
    /// A checkpoint could not be stored.
    #[error("checkpoint {id} failed: {cause}")]
    Checkpoint {
        /// The checkpoint.
        id: u64,
        /// Why.
        cause: String,
    },
    /// A thread of the job panicked: a bug in weir, not in the job.
    #[error("internal error: thread '{thread}' panicked ({message}); please report this as a weir bug")]
    Panicked {
        /// The thread's name.
        thread: String,
        /// What the panic said.
        message: String,
    },
}

/// A running source subtask.
pub trait Source: Send {
    /// Appends up to `max` events to `out`; returns false once the source is exhausted.
    fn poll(&mut self, out: &mut EventBatch, max: usize) -> Result<bool, String>;
    /// Where the next poll starts (a file's byte offset, a generator's index), in the source's own
    /// form: recorded with every checkpoint so that a restore can resume exactly there.
    fn position(&self) -> Position;
    /// The checkpoint whose barrier this subtask injected at `position` has completed (a Kafka
    /// source commits its offsets back to its group, for monitoring).
    fn checkpoint_completed(&mut self, _position: &Position) {}
    /// What the job's status shows of this subtask beside its counts (a Kafka source's lag per
    /// partition), when it has something new; asked after every poll, so it answers cheaply.
    fn status(&mut self) -> Option<serde_json::Value> {
        None
    }
}

/// A running operator subtask.
pub trait Operator: Send {
    /// Processes a batch of its input `input` (the index of the job file's `inputs` it came
    /// from; 0 when it reads one stream), appending what it emits to `out`.
    fn process(&mut self, input: usize, batch: &EventBatch, out: &mut Emitted) -> Result<(), String>;
    /// Its input watermark is `watermark` now (milliseconds; it has advanced, or a processing-time
    /// timer is due): fires timers due, appending what they emit to `out`, a batch of them at a
    /// time. True when more of those due when this advance began are left: the caller sends
    /// `out` on and calls again with the same watermark. Timers set while firing for a time
    /// already reached wait for the next advance, so that no operator can keep the host firing.
    /// An operator without timers only notes it.
    fn advance_time(&mut self, _watermark: i64, _out: &mut Emitted) -> Result<bool, String> {
        Ok(false)
    }
    /// When its earliest processing-time timer is due (milliseconds since the Unix epoch).
    fn next_processing_timer(&self) -> Option<i64> {
        None
    }
    /// The snapshot of its keyed state (one per part of its key groups, when it runs a module
    /// over each: see [`crate::runtime::key_ranges`]), none when it keeps no state: what it holds
    /// at once, so that processing goes on (a copy, or a large state frozen under an overlay: see
    /// [`crate::state::checkpoint`]).
    fn snapshot(&mut self) -> Result<Vec<StateSnapshot>, String>;
    /// The same, at the barrier of a stop whose state is handed over: nothing runs after it but
    /// the next run, so an operator that can freezes its state for the snapshot to be encoded off
    /// this thread and hands over an overlay instead of copying it (see [`crate::state::overlay`]),
    /// split at `cuts`, the key groups where the next run's parts begin (a canary's step).
    fn freeze(&mut self, _cuts: &[u32]) -> Result<Vec<StateSnapshot>, String> {
        self.snapshot()
    }
    /// Its keyed state itself, when the job stops for an upgrade: handed over in place to the
    /// subtask that replaces it, one state per part of its key groups. None when it keeps no
    /// state.
    fn into_state(self: Box<Self>) -> Vec<HandedOverState> {
        Vec::new()
    }
    /// Forks its state for a shadow run beside it ([`super::shadow`]): it goes on over a
    /// copy-on-write view of its state, and the shadow gets another, each writing apart.
    fn fork_state(&mut self) -> Result<ForkedState, String> {
        Err("it runs no module that a shadow could stand beside".to_string())
    }
    /// Bytes of memory it holds beside state it shares with a fork, about: the writes it keeps
    /// apart from it, its timers, its instance.
    fn memory_bytes(&self) -> u64 {
        0
    }
}

/// An operator subtask's state as [`Operator::fork_state`] forked it for a shadow.
pub struct ForkedState {
    /// The shadow's view of the state (its backend an overlay over the shared one), its timers
    /// found in it.
    pub state: HandedOverState,
    /// The states the operator declares, as it saved them: the shadow's module migrates those
    /// whose schema it changed.
    pub states: Vec<crate::state::StateDescriptor>,
}

/// An operator subtask's keyed state as it hands it over.
pub struct HandedOverState {
    /// The key groups it covers (those the operator was opened with: none for an operator whose
    /// input is not keyed).
    pub key_groups: std::ops::Range<u32>,
    /// Its backend, as the stop's freeze left it ([`crate::state::StateBackend::freeze`]).
    pub backend: Box<dyn crate::state::StateBackend>,
    /// Its timers in time order, when it has any state for them: the next run takes the queue
    /// as it is rather than rebuild it from the backend (a second for 1,000,000 timers).
    pub timers: Option<crate::state::TimerQueue>,
    /// Its broadcast state, if the operator has any.
    pub broadcast: Option<crate::state::broadcast::SavedBroadcast>,
}

/// A running sink subtask.
pub trait Sink: Send {
    /// Writes a batch.
    fn write(&mut self, batch: &EventBatch) -> Result<(), String>;
    /// At aligned barrier `id`: makes everything written so far durable, ready to be published
    /// when checkpoint `id` completes (the first phase of a two-phase commit), and returns what
    /// the factory's [`SinkFactory::commit`] is to publish then (a pending file's name, a
    /// prepared transaction's id), in the sink's own form; it travels with the barrier's
    /// acknowledgement to the checkpoint coordinator. Sinks that cannot hold output back (stdout)
    /// return nothing: they are at-least-once. `lasting`: the barrier is a savepoint's or the
    /// job's final one, which a restore or the job's end relies on: a sink that holds output back
    /// for a while (see the postgres sink) makes it durable at it.
    fn pre_commit(&mut self, _id: u64, _lasting: bool) -> Result<Option<serde_json::Value>, String> {
        Ok(None)
    }
    /// Flushes everything once the input has ended.
    fn finish(&mut self) -> Result<(), String>;
}

/// Creates source subtasks.
pub trait SourceFactory: Send + Sync {
    /// Opens subtask `info`, at `resume` when the job goes on from a checkpoint, a savepoint or a
    /// handover that has a position for it (else at the beginning).
    fn create(&self, info: &SubtaskInfo, resume: Option<&Position>) -> Result<Box<dyn Source>, String>;
    /// Events per second for the whole source (all subtasks), if limited.
    fn rate(&self) -> Option<f64>;
    /// The positions every subtask of source `uid` recorded at a checkpoint, as one that any
    /// subtask resumes from (each taking its own part): so a source resumes at any parallelism.
    /// `uid` names the source in errors.
    fn merge_positions(&self, uid: &str, recorded: &[Position]) -> Result<Position, String>;
}

/// Creates operator subtasks.
pub trait OperatorFactory: Send + Sync {
    /// Opens subtask `info` (for a Wasm operator: instantiates the module and calls `open`).
    fn create(&self, info: &SubtaskInfo) -> Result<Box<dyn Operator>, String>;
    /// The module versions it runs beside each other (a canary's), whose work the job's
    /// status counts apart; `None` for an operator whose subtasks run one instance each (one
    /// version alone when they run one per part of their key groups).
    fn versions(&self) -> Option<Arc<super::key_ranges::ModuleVersions>> {
        None
    }
}

/// The key of a sink's record of a barrier ([`SinkFactory::committed`]) that says it held output
/// back at that barrier (in transactions the barrier does not cover): a checkpoint with such a
/// record is no point to resume from.
pub const HELD_OUTPUT: &str = "held";

/// Creates sink subtasks.
pub trait SinkFactory: Send + Sync {
    /// Opens subtask `info`.
    fn create(&self, info: &SubtaskInfo) -> Result<Box<dyn Sink>, String>;
    /// Publishes what its subtasks pre-committed at barrier `id` and at earlier ones not yet
    /// published (`committables`, as [`Sink::pre_commit`] returned them), once checkpoint `id` is
    /// complete (the second phase). Must be idempotent: a restore may commit again.
    fn commit(&self, _id: u64, _committables: Vec<serde_json::Value>) -> Result<(), String> {
        Ok(())
    }
    /// What the sink has committed once barrier `id` is, for the barrier's metadata: a restore
    /// from it hands this back to the sink it opens. `None` for sinks that keep no record.
    fn committed(&self, _id: u64) -> Option<serde_json::Value> {
        None
    }
}
