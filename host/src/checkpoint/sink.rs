//! [`StorageSink`]: where a running job's checkpoints go. State files are written as operators
//! hand them over; `_metadata` is written last, so a checkpoint directory without a valid
//! `_metadata` is not a checkpoint. After each completion, checkpoints beyond `retained` are
//! deleted, oldest first.
use serde::Serialize;

use super::storage::Storage;
use super::{checked, paths};
use crate::runtime::{CheckpointSink, SourcePosition, StateFile, StateSnapshot};

/// Version of the `_metadata` layout.
pub const METADATA_FORMAT: u32 = 1;

/// The `_metadata` of a completed checkpoint: a JSON object, then a line `sha256:<hex>` of the
/// JSON's bytes.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Metadata<'a> {
    format: u32,
    job: &'a str,
    checkpoint: u64,
    max_parallelism: u32,
    /// Milliseconds since the Unix epoch.
    completed_at: u64,
    sources: Vec<SourcePosition>,
    states: Vec<StateFile>,
}

/// Stores one job's checkpoints.
pub struct StorageSink {
    storage: Storage,
    job: String,
    max_parallelism: u32,
    retained: u32,
}

impl StorageSink {
    /// Checkpoints of `job` in `storage`, keeping the newest `retained` (at least 1).
    pub fn new(storage: Storage, job: &str, max_parallelism: u32, retained: u32) -> Self {
        StorageSink { storage, job: job.to_string(), max_parallelism, retained: retained.max(1) }
    }
}

impl CheckpointSink for StorageSink {
    fn write_state(&self, id: u64, uid: &str, subtask: u32, snapshot: StateSnapshot) -> Result<StateFile, String> {
        checked::put_state(&self.storage, &paths::state_file(&self.job, id, uid, subtask), uid, subtask, snapshot)
    }

    fn complete(&self, id: u64, sources: Vec<SourcePosition>, states: Vec<StateFile>) -> Result<(), String> {
        let completed_at = crate::runtime::now_ms();
        let metadata = Metadata {
            format: METADATA_FORMAT,
            job: &self.job,
            checkpoint: id,
            max_parallelism: self.max_parallelism,
            completed_at,
            sources,
            states,
        };
        checked::put(&self.storage, &paths::metadata(&self.job, id), &metadata)?;
        // Keep the newest `retained`; older directories, complete or abandoned, go.
        let keep_from = (id + 1).saturating_sub(u64::from(self.retained));
        for old in self.storage.checkpoints(&self.job).map_err(|e| e.to_string())? {
            if old < keep_from {
                self.storage.delete_checkpoint(&self.job, old).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}
