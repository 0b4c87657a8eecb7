//! What the executor runs: vertices (sources, operators, sinks) with their parallelism and the
//! edges between them, and what connects a run to its job.
use std::sync::Arc;

use super::handover::Handover;
use super::snapshot::{CheckpointConfig, SavepointRequest, SourcePosition};
use super::task::{OperatorFactory, SinkFactory, SourceFactory};

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
    /// Sources and operators: generate watermarks from the timestamps of what they send.
    pub watermarks: Option<super::WatermarkSpec>,
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
}

impl RunHandles {
    /// Cancels the job: its running subtasks stop, and waiting ones are woken to.
    pub fn cancel(&self) {
        self.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wakeup.announce();
    }
}
