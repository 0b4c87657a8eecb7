//! What the executor runs: vertices (sources, operators, sinks) with their parallelism and the
//! edges between them, and what connects a run to its job.
use std::sync::Arc;

use super::handover::Handover;
use super::snapshot::{CheckpointConfig, SavepointRequest, SourcePosition};
use super::task::{OperatorFactory, SinkFactory, SourceFactory};

/// How a stream is spread over the subtasks of a vertex that reads it (Flink's partitioners).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// Subtask i of the upstream feeds subtask i; when parallelisms differ, batches are spread
    /// round-robin (Flink's rebalance).
    Forward,
    /// By key group of the event key (Flink's keyBy).
    Hash,
    /// Whole batches to each subtask in turn, whatever the parallelisms.
    Rebalance,
    /// Every event to every subtask.
    Broadcast,
}

impl Partitioning {
    /// Its name in job files, and in the API.
    pub fn name(self) -> &'static str {
        match self {
            Partitioning::Forward => "forward",
            Partitioning::Hash => "hash",
            Partitioning::Rebalance => "rebalance",
            Partitioning::Broadcast => "broadcast",
        }
    }
}

/// One input of a vertex: the vertex it reads, and how that stream reaches its subtasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexInput {
    /// The uid of the source or operator read.
    pub from: Arc<str>,
    /// The side output of it read, if not its main output.
    pub side_output: Option<SideOutput>,
    /// How its events are spread over the subtasks.
    pub partitioning: Partitioning,
}

/// An operator's side output, as an input names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideOutput {
    /// Its output number: k for the k-th side output its `describe` declares (0 is the main
    /// output).
    pub index: u8,
    /// Its name.
    pub name: Arc<str>,
}

impl VertexInput {
    /// The output of `from` read: 0 its main output, k its side output k.
    pub fn output(&self) -> u8 {
        self.side_output.as_ref().map_or(0, |s| s.index)
    }
}

/// One vertex of the graph.
pub struct Vertex<F: ?Sized> {
    /// Stable id from the job file.
    pub uid: Arc<str>,
    /// Number of subtasks.
    pub parallelism: u32,
    /// What it reads (none for sources).
    pub inputs: Vec<VertexInput>,
    /// Creates the subtasks.
    pub factory: Box<F>,
    /// Sources and operators: generate watermarks from the timestamps of what they send.
    pub watermarks: Option<super::WatermarkSpec>,
}

/// A job: a directed acyclic graph of sources, operators and sinks, each operator and sink reading
/// the vertices its inputs name. A vertex read by several gives each the whole stream; one reading
/// several reads their union.
pub struct JobGraph {
    /// The job's name.
    pub name: String,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// Start attempt, passed to every subtask.
    pub attempt: u32,
    /// Sources.
    pub sources: Vec<Vertex<dyn SourceFactory>>,
    /// Operators, each after every operator it reads.
    pub operators: Vec<Vertex<dyn OperatorFactory>>,
    /// Sinks.
    pub sinks: Vec<Vertex<dyn SinkFactory>>,
    /// Checkpointing, when enabled.
    pub checkpointing: Option<CheckpointConfig>,
    /// Where source subtasks resume (from a checkpoint, a savepoint or a handover); one without a
    /// position here starts at the beginning.
    pub positions: Vec<SourcePosition>,
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
    /// Wakes the run's waiting threads when the job is canceled.
    pub wakeup: Arc<super::Wakeup>,
    /// Operators' input, recorded while a trial asks for it.
    pub recent: Arc<super::RecentInput>,
    /// Shadow runs beside its operators.
    pub shadows: Arc<super::shadow::Shadows>,
}

impl RunHandles {
    /// Cancels the job: its running subtasks stop, and waiting ones are woken to.
    pub fn cancel(&self) {
        self.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wakeup.announce();
    }
}
