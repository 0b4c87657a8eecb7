//! Checkpoints: the storage layout and the snapshot file format of keyed state.
//!
//! Status: the layout and the format are here and tested; the barrier coordinator that takes
//! checkpoints while a job runs, their upload through `object_store`, retention and recovery are
//! the rest of issue 4 and are not built yet.
//!
//! Layering: uses `state` and `runtime::key_group`; knows nothing of wasm, channels or HTTP.
pub mod paths;
pub mod snapshot;
