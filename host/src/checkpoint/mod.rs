//! Checkpoints and savepoints at rest: the storage layout, storage through `object_store`, writing completed checkpoints ([`StorageSink`]) and
//! savepoints ([`savepoint::SavepointSink`]), and restoring from either ([`Restore`]). Taking them
//! while a job runs is the runtime's coordinator; the designs are in `docs/checkpoints.md` and
//! `docs/savepoint-format.md`.
//!
//! Layering: uses `state` and `runtime` (its checkpoint traits); knows nothing of wasm or HTTP.
mod checked;
pub mod edit;
pub mod paths;
mod restore;
mod resume_points;
pub mod savepoint;
mod shared;
mod sink;
pub mod storage;
mod stored;

pub use restore::Restore;
pub use shared::delete_unreferenced_shared_files;

/// Deletes the resume points (savepoints it went on from) of the job of id `job_id` named `job`.
pub fn delete_resume_points(storage: &storage::Storage, job: &str, job_id: &str) -> Result<(), String> {
    resume_points::delete_older(storage, job, job_id, u64::MAX)
}
pub use sink::StorageSink;

/// The checkpoint directories of job `job` (by name) that belong to the job of id `job_id`: those
/// whose `_metadata` names it or names no job (written by an older weir), and those without a
/// readable `_metadata` (abandoned: never restored, whoever started them; while a job runs, no
/// other job writes into its checkpoint directory).
pub fn owned_checkpoints(
    storage: &storage::Storage,
    job: &str,
    job_id: &str,
) -> Result<Vec<u64>, storage::StorageError> {
    let mut owned = Vec::new();
    for id in storage.checkpoints(job)? {
        if is_owned(storage, job, job_id, id)? {
            owned.push(id);
        }
    }
    Ok(owned)
}

/// Whether checkpoint directory `id` of job `job` belongs to the job of id `job_id`, as
/// [`owned_checkpoints`] counts it (reads its `_metadata`).
fn is_owned(storage: &storage::Storage, job: &str, job_id: &str, id: u64) -> Result<bool, storage::StorageError> {
    Ok(match restore::checkpoint_owner(storage, job, id)? {
        Some(owner) => owner.is_empty() || owner == job_id,
        None => true,
    })
}
