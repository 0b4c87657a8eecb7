//! Savepoints a job went on from (the stop of an upgrade or a rollback), recorded beside its
//! checkpoints as points to resume from: `<job-name>/savepoint-<n>`, a checked JSON file naming
//! the job and where the savepoint is.
//!
//! Why: a sink that cannot take output back (PostgreSQL) commits what such a stop covers once
//! its savepoint is stored, so a resume must never go back behind it to an older checkpoint (the
//! events between would be written twice). A job resumes from the newest of its checkpoints and
//! of these, as Flink resumes a job restored from a savepoint from that savepoint until it has
//! a checkpoint of its own. Retention deletes them once a checkpoint kept is newer; a job
//! canceled with `delete-on-cancellation` deletes its own.
use serde::{Deserialize, Serialize};

use super::checked::{self, Unusable};
use super::paths;
use super::storage::{Storage, StorageError};

/// What a resume point records.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct ResumePoint {
    /// The id of the job that went on from it.
    pub(crate) job_id: String,
    /// The savepoint's barrier id.
    pub(crate) savepoint: u64,
    /// Where the savepoint is: a local path or a URL.
    pub(crate) location: String,
}

/// Records savepoint `id` of job `job` (of id `job_id`), stored at `location`.
pub(crate) fn record(storage: &Storage, job: &str, job_id: &str, id: u64, location: &str) -> Result<(), String> {
    let point = ResumePoint { job_id: job_id.to_string(), savepoint: id, location: location.to_string() };
    checked::put(storage, &paths::resume_point(job, id), &point)
}

/// The ids of job `job`'s resume points, ascending.
pub(crate) fn ids(storage: &Storage, job: &str) -> Result<Vec<u64>, StorageError> {
    let prefix = format!("{}/", paths::job_dir(job));
    let files = storage.list(&paths::job_dir(job))?;
    let mut ids: Vec<u64> = files.iter().filter_map(|f| paths::parse_resume_point(f.strip_prefix(&prefix)?)).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Resume point `id` of job `job`, checked.
pub(crate) fn read(storage: &Storage, job: &str, id: u64) -> Result<ResumePoint, Unusable> {
    let path = paths::resume_point(job, id);
    let json = checked::get(storage, &path)?;
    Ok(serde_json::from_str(&json).map_err(|e| format!("{path}: {e}"))?)
}

/// Deletes the resume points of job `job` of id `job_id` (or unreadable) older than `before`.
pub(crate) fn delete_older(storage: &Storage, job: &str, job_id: &str, before: u64) -> Result<(), String> {
    for id in ids(storage, job).map_err(|e| e.to_string())?.into_iter().filter(|&id| id < before) {
        let own = match read(storage, job, id) {
            Ok(point) => point.job_id == job_id,
            Err(Unusable::Torn(_)) => true,
            Err(Unusable::Storage(e)) => return Err(e.to_string()),
        };
        if own {
            storage.delete_file(&paths::resume_point(job, id)).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_listed_read_and_deleted_by_owner() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open("file://chk", dir.path()).unwrap();
        record(&storage, "job", "mine", 7, "/sp/a").unwrap();
        record(&storage, "job", "theirs", 9, "/sp/b").unwrap();
        record(&storage, "job", "mine", 12, "/sp/c").unwrap();
        assert_eq!(ids(&storage, "job").unwrap(), [7, 9, 12]);
        assert_eq!(read(&storage, "job", 9).ok().map(|p| p.location), Some("/sp/b".to_string()));
        delete_older(&storage, "job", "mine", 12).unwrap();
        assert_eq!(ids(&storage, "job").unwrap(), [9, 12], "another job's stays");
    }
}
