//! weir: a stream-processing host for operators compiled to WebAssembly components, with all keyed
//! state owned by the host.
//!
//! Modules, lower layers first; each depends only on those above it in this list:
//! - [`key_group`]: keys to key groups to subtasks (Flink's assignment), which state and the
//!   runtime both build on.
//! - [`state`]: the `StateBackend` trait, the in-memory backend, the snapshots backends make at
//!   barriers (`SnapshotBody`) and the canonical snapshot format.
//! - [`runtime`]: job graphs, the subtask traits, what barriers carry; inside it, lower first:
//!   the per-subtask loops (`runner`, reaching a run only through its `TaskContext` and stream
//!   traits), the checkpoint coordinator (`coordinator`, which never sees the runner), and the
//!   executor, the only part that knows threads and channels.
//! - [`checkpoint`]: checkpoints and savepoints at rest: storage, `_metadata`, writing and
//!   restoring.
//! - [`wasm`]: the engine, the `weir:operator` contract and Wasm operators.
//! - [`connectors`]: sources and sinks.
//! - [`builtin`]: native operators compiled into the host (for benchmarks).
//! - [`job`]: the job file, and turning it into a runnable graph.
//! - [`flink`]: Apache Flink as the engine: the runner's plan and jar, Flink's REST API, a local
//!   cluster.
//! - [`control`]: the module store and the job registry.
//! - [`api`]: the REST API.
//! - [`cli`]: the `weir` command line.
#![deny(missing_docs)]

pub mod api;
pub mod builtin;
pub mod checkpoint;
pub mod cli;
pub mod connectors;
pub mod control;
pub mod flink;
pub mod job;
pub mod key_group;
pub mod runtime;
pub mod state;
pub mod wasm;
