//! The control plane: the module store and the job registry that `weir serve` (and `weir run`'s
//! API) operate on. Both persist under a data directory, so a restarted server knows the modules
//! it was given and the jobs it ran.
//!
//! Layering: above `job`, `runtime` and `wasm`; below `api` and `cli`.
pub mod compare;
mod jobs;
mod modules;

pub use jobs::{
    CanaryAbort, CanaryStep, CancelError, DisposeError, HistoryEvent, JobInfo, JobState, Jobs, RollbackPoint,
    SHADOW_MEMORY_LIMIT, SavepointError, SavepointRecord, SavepointStatus, StartFrom, SubmitError, TRIAL_SAMPLE,
    TrialReport, UpgradeError, UpgradeStatus,
};
pub(crate) use modules::StoreModules;
pub use modules::{ModuleInfo, ModuleStore};

use std::path::Path;

/// Writes a file so that readers see the old content or the new, never a torn one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Locks a mutex, taking the data even if a thread panicked while holding it: the registries'
/// data stays consistent between statements, and the server must keep serving.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
