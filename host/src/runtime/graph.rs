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
}

impl fmt::Display for SubtaskInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' subtask {}/{}", self.uid, self.index + 1, self.parallelism)
    }
}

/// A failure of one subtask, as the user sees it: which vertex, which subtask, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind} {subtask}: {cause}")]
pub struct TaskError {
    /// "source", "operator" or "sink".
    pub kind: &'static str,
    /// The failing subtask.
    pub subtask: SubtaskInfo,
    /// What went wrong.
    pub cause: String,
}

/// A running source subtask.
pub trait Source: Send {
    /// Appends up to `max` events to `out`; returns false once the source is exhausted.
    fn poll(&mut self, out: &mut EventBatch, max: usize) -> Result<bool, String>;
}

/// A running operator subtask.
pub trait Operator: Send {
    /// Processes a batch, appending what it emits to `out`.
    fn process(&mut self, input: &EventBatch, out: &mut EventBatch) -> Result<(), String>;
}

/// A running sink subtask.
pub trait Sink: Send {
    /// Writes a batch.
    fn write(&mut self, batch: &EventBatch) -> Result<(), String>;
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
}
