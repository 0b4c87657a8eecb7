//! The runtime core: job graphs of sources, operators and sinks, run as parallel subtasks joined
//! by bounded channels, with events routed by key group on `hash` edges.
//!
//! By role: `graph.rs` (the graph, and the handles that connect a run to its job), `task.rs`
//! (what runs in a subtask: the source, operator and sink traits and their factories),
//! `snapshot.rs` (what barriers carry), `handover.rs` (what an upgrade's stop leaves the next
//! run), `recent.rs` and `shadow.rs` (what trials and shadow runs of a new module see), `key_ranges.rs`
//! (a subtask whose key groups two modules serve: a canary), `metrics.rs` and `checkpoint_stats.rs` (what a run counts), `watermarks.rs` (event time: generating watermarks
//! and combining them over a subtask's inputs), `runner/` (the per-subtask
//! loops, behind the `TaskContext`, `Input` and `Output` traits), `coordinator/` (triggering,
//! completing and committing checkpoints), `control.rs` (what one run's threads share: the
//! runner's context), `channel.rs` and `alignment.rs` (weir's streams between subtasks), and
//! `executor/` (threads and wiring).
//!
//! Layering: depends on `state` only. It knows nothing of wasm (operators are [`Operator`] trait
//! objects), of file formats (connectors implement [`Source`] and [`Sink`]) or of HTTP.
pub mod abort_if;
mod alignment;
pub mod batch;
mod channel;
pub mod checkpoint_stats;
mod control;
mod coordinator;
mod executor;
pub mod graph;
mod handover;
pub mod key_ranges;
mod metrics;
mod recent;
mod runner;
pub mod shadow;
mod snapshot;
mod task;
mod wakeup;
pub mod watermarks;

pub use batch::{Emitted, Event, EventBatch};
pub use executor::{MAX_CHANNELS, MAX_SUBTASKS, check_size, execute, panic_message};
pub use graph::{JobGraph, Partitioning, RunHandles, SideOutput, Vertex, VertexInput};
pub use handover::{Handover, Stopped};
pub use metrics::{InputSummary, JobMetrics, SubtaskSummary, VertexSummary};
pub use recent::RecentInput;
pub use snapshot::{
    CheckpointConfig, CheckpointSink, Completed, NativeState, NativeStoredFile, Position, SavepointRequest,
    SinkCommitted, SnapshotPart, SourcePosition, StateFile, StateSnapshot, StoredState,
};
pub use task::{
    ForkedState, HELD_OUTPUT, HandedOverState, Interrupt, JobFailure, Operator, OperatorFactory, Sink, SinkFactory,
    Source, SourceFactory, SubtaskInfo, TaskError, VertexKind,
};
pub use wakeup::Wakeup;
pub use watermarks::WatermarkSpec;

/// Events per batch that sources and routers aim for: large enough to amortise a Wasm call and a
/// channel hand-off, small enough to keep latency and memory low.
pub const BATCH_SIZE: usize = 1024;

/// Bytes of event keys and values a batch aims to stay under, whatever its number of events: a
/// batch is what one guest call takes and returns, and what a channel slot holds.
pub const BATCH_BYTES: usize = 4 << 20;

/// The largest event (key and value) a source passes on; a larger one fails the job, naming the
/// source and the size.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// Batches a channel holds before its sender blocks (backpressure).
pub const CHANNEL_CAPACITY: usize = 8;

/// The most of a text that came from a guest (an error, a log line) the host keeps and shows:
/// enough to read, too little to fill the host's memory, its logs or its job records.
pub const GUEST_TEXT_LIMIT: usize = 4096;

/// `text`, cut after [`GUEST_TEXT_LIMIT`] bytes (at a character boundary) with a note of how
/// much was left out.
pub fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= GUEST_TEXT_LIMIT {
        return text.into();
    }
    let end = (0..=GUEST_TEXT_LIMIT).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}… ({} more bytes left out)", &text[..end], text.len() - end).into()
}

/// Milliseconds since the Unix epoch: the timestamps weir records (jobs, checkpoints).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
