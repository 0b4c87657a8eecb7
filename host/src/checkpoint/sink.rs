//! [`StorageSink`]: where a running job's checkpoints go. State files are written as operators
//! hand them over; `_metadata` is written last, so a checkpoint directory without a valid
//! `_metadata` is not a checkpoint. After each completion, checkpoints beyond `retained` are
//! deleted, oldest first.
use serde::Serialize;

use super::storage::Storage;
use super::{checked, paths};
use crate::runtime::{CheckpointSink, Completed, SinkCommitted, SourcePosition, StateFile, StateSnapshot};

/// Version of the `_metadata` layout.
pub const METADATA_FORMAT: u32 = 1;

/// The `_metadata` of a completed checkpoint: a JSON object, then a line `sha256:<hex>` of the
/// JSON's bytes.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Metadata<'a> {
    format: u32,
    job: &'a str,
    /// The id of the job that wrote it: a job resumes only from its own checkpoints.
    job_id: &'a str,
    checkpoint: u64,
    max_parallelism: u32,
    /// Milliseconds since the Unix epoch.
    completed_at: u64,
    sources: Vec<SourcePosition>,
    states: Vec<StateFile>,
    sinks: Vec<SinkCommitted>,
}

/// Stores one job's checkpoints.
pub struct StorageSink {
    storage: Storage,
    job: String,
    job_id: String,
    max_parallelism: u32,
    retained: u32,
}

impl StorageSink {
    /// Checkpoints of job `job` (named so; of id `job_id`) in `storage`, keeping the newest
    /// `retained` (at least 1).
    pub fn new(storage: Storage, job: &str, job_id: &str, max_parallelism: u32, retained: u32) -> Self {
        let (job, job_id) = (job.to_string(), job_id.to_string());
        StorageSink { storage, job, job_id, max_parallelism, retained: retained.max(1) }
    }
}

impl CheckpointSink for StorageSink {
    fn write_state(&self, id: u64, uid: &str, subtask: u32, snapshot: StateSnapshot) -> Result<StateFile, String> {
        checked::put_state(&self.storage, &paths::state_file(&self.job, id, uid, subtask), uid, subtask, snapshot)
    }

    fn complete(&self, id: u64, completed: Completed) -> Result<(), String> {
        let Completed { sources, states, sinks } = completed;
        let completed_at = crate::runtime::now_ms();
        let metadata = Metadata {
            format: METADATA_FORMAT,
            job: &self.job,
            job_id: &self.job_id,
            checkpoint: id,
            max_parallelism: self.max_parallelism,
            completed_at,
            sources,
            states,
            sinks,
        };
        checked::put(&self.storage, &paths::metadata(&self.job, id), &metadata)?;
        // Keep the newest `retained`; older directories of this job, complete or abandoned, go.
        // Checkpoints another job of this name wrote stay: that job may still resume from them.
        let keep_from = (id + 1).saturating_sub(u64::from(self.retained));
        for old in super::owned_checkpoints(&self.storage, &self.job, &self.job_id).map_err(|e| e.to_string())? {
            if old < keep_from {
                self.storage.delete_checkpoint(&self.job, old).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}
