//! The runtime core: job graphs of sources, operators and sinks, run as parallel subtasks joined
//! by bounded channels, with events routed by key group on `hash` edges.
//!
//! Layering: depends on `state` only. It knows nothing of wasm (operators are [`Operator`] trait
//! objects), of file formats (connectors implement [`Source`] and [`Sink`]) or of HTTP.
pub mod batch;
mod channel;
pub mod checkpoint_stats;
mod executor;
pub mod graph;
pub mod key_group;

pub use batch::{Event, EventBatch};
pub use executor::{JobFailure, JobMetrics, SubtaskSummary, VertexSummary, clock_ns, execute, panic_message};
pub use graph::{
    CheckpointConfig, CheckpointSink, Completed, Handover, JobGraph, Operator, OperatorFactory, Partitioning,
    SavepointRequest, Sink, SinkCommitted, SinkFactory, SnapshotBody, Source, SourceFactory, SourcePosition, StateFile,
    StateSnapshot, Stopped, SubtaskInfo, TaskError, Vertex,
};

/// Events per batch that sources and routers aim for: large enough to amortise a Wasm call and a
/// channel hand-off, small enough to keep latency and memory low.
pub const BATCH_SIZE: usize = 1024;

/// Batches a channel holds before its sender blocks (backpressure).
pub const CHANNEL_CAPACITY: usize = 8;

/// Milliseconds since the Unix epoch: the timestamps weir records (jobs, checkpoints).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
