//! Apache Flink as the engine of a weir job that outgrows one machine: the job file becomes a
//! Flink DataStream job (the Java runner in `flink/runner/`, built by [`runner`]), each Wasm
//! operator a Flink operator whose subtasks hand batch frames to a `weir worker` (the guest
//! boundary of [`crate::wasm::worker`]), while Flink owns distribution, keyed state, timers,
//! checkpoints, savepoints and rescaling.
//!
//! Layering: uses `job` (to read and check job files) and `wasm` (to load and describe modules);
//! `cli` drives it.
pub mod cluster;
pub mod plan;
pub mod rest;
pub mod runner;
pub mod savepoints;
pub mod upgrade;

pub use cluster::{FLINK_VERSION, LocalCluster, flink_home};
pub use rest::{FlinkJob, JobManager};
