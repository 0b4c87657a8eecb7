//! Checkpoints and savepoints at rest: the storage layout, the snapshot file format of keyed
//! state, storage through `object_store`, writing completed checkpoints ([`StorageSink`]) and
//! savepoints ([`savepoint::SavepointSink`]), and restoring from either ([`Restore`]). Taking them
//! while a job runs is the runtime's coordinator; the designs are in `docs/checkpoints.md` and
//! `docs/savepoint-format.md`.
//!
//! Layering: uses `state` and `runtime` (its checkpoint traits); knows nothing of wasm or HTTP.
mod checked;
pub mod paths;
mod restore;
pub mod savepoint;
mod sink;
pub mod snapshot;
pub mod storage;

pub use restore::Restore;
pub use sink::StorageSink;
