//! Checkpoints: the storage layout and the snapshot file format of keyed state.
//!
//! Status: the layout, the snapshot format and storage through `object_store` are here and
//! tested; the barrier coordinator that takes checkpoints while a job runs, retention and recovery
//! are the rest of issue 4 and are not built yet (`docs/checkpoints.md` has the design).
//!
//! Layering: uses `state` and `runtime` (its checkpoint traits); knows nothing of wasm or HTTP.
pub mod paths;
mod restore;
mod sink;
pub mod snapshot;
pub mod storage;

pub use restore::Restore;
pub use sink::StorageSink;
