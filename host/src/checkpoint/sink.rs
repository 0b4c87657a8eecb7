//! [`StorageSink`]: where a running job's checkpoints go. State files are written as operators
//! hand them over; `_metadata` is written last, so a checkpoint directory without a valid
//! `_metadata` is not a checkpoint. After each completion, checkpoints beyond `retained` are
//! deleted, oldest first, and the shared files of incremental checkpoints only they referenced.
//! A backend with files of its own (RocksDB) has its snapshots stored as those files (native).
use serde::Serialize;

use super::shared::SharedFiles;
use super::storage::Storage;
use super::stored::{self, Form};
use super::{checked, paths};
use crate::runtime::{CheckpointSink, Completed, SinkCommitted, SourcePosition, StateFile, StateSnapshot};

/// Version of the `_metadata` layout: 2 stores source positions as opaque hex, 1 as numbers.
pub const METADATA_FORMAT: u32 = 2;

/// The `_metadata` layouts this weir reads (a position stored as a number is read as one).
pub const METADATA_FORMATS_READ: std::ops::RangeInclusive<u32> = 1..=METADATA_FORMAT;

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
    states: &'a [StateFile],
    sinks: Vec<SinkCommitted>,
}

/// Stores one job's checkpoints.
pub struct StorageSink {
    storage: Storage,
    job: String,
    job_id: String,
    max_parallelism: u32,
    retained: u32,
    /// Incremental: SST files go to `shared/`, once.
    incremental: bool,
    /// The shared files of the job's checkpoints (incremental ones of earlier runs included,
    /// whatever this run's setting, so that they go once unreferenced).
    shared: SharedFiles,
    /// The checkpoints this sink completed and has not deleted yet: its job's, known without
    /// reading their `_metadata` back.
    completed: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

impl StorageSink {
    /// Checkpoints of job `job` (named so; of id `job_id`) in `storage`, keeping the newest
    /// `retained` (at least 1), `incremental` or not. Shared files no checkpoint references
    /// (left by a run that crashed) are deleted.
    pub fn new(
        storage: Storage,
        (job, job_id): (&str, &str),
        max_parallelism: u32,
        retained: u32,
        incremental: bool,
    ) -> Result<Self, String> {
        let shared = SharedFiles::open(storage.clone(), job)?;
        let (job, job_id) = (job.to_string(), job_id.to_string());
        let completed = Default::default();
        let retained = retained.max(1);
        Ok(StorageSink { storage, job, job_id, max_parallelism, retained, incremental, shared, completed })
    }
}

impl CheckpointSink for StorageSink {
    fn write_state(
        &self,
        id: u64,
        uid: &str,
        subtask: u32,
        snapshot: StateSnapshot,
    ) -> Result<(StateFile, u64), String> {
        let shared = self.incremental.then_some((&self.shared, id));
        let dir = paths::checkpoint_dir(&self.job, id);
        stored::put(&self.storage, &dir, (uid, subtask), snapshot, Form::Native { shared })
    }

    fn complete(&self, id: u64, completed: Completed) -> Result<(), String> {
        let Completed { sources, states, sinks } = completed;
        let held = sinks.iter().any(SinkCommitted::held_output);
        let completed_at = crate::runtime::now_ms();
        let metadata = Metadata {
            format: METADATA_FORMAT,
            job: &self.job,
            job_id: &self.job_id,
            checkpoint: id,
            max_parallelism: self.max_parallelism,
            completed_at,
            sources,
            states: &states,
            sinks,
        };
        checked::put(&self.storage, &paths::metadata(&self.job, id), &metadata)?;
        // Keep the newest `retained` completed checkpoints of this job (as Flink counts them: an
        // abandoned directory takes no one's place); every other directory of this job older than
        // this one goes, complete or abandoned (one subsumed between two kept ones included: its
        // snapshots are all stored by now, the uploader stores them in barrier order). Newer
        // ones are still pending. Checkpoints another job of this name wrote stay: that job may
        // still resume from them. `_metadata` is read back only of checkpoints this sink did not
        // complete, newest first, until enough are found.
        let mut completed = self.completed.lock().unwrap_or_else(|e| e.into_inner());
        completed.insert(id);
        let stored = self.storage.checkpoints(&self.job).map_err(|e| e.to_string())?;
        let mut kept = Vec::new();
        for &old in stored.iter().rev().filter(|&&old| old <= id) {
            if kept.len() == self.retained as usize {
                break;
            }
            let intact = match completed.contains(&old) {
                true => true,
                false => super::restore::checkpoint_owner(&self.storage, &self.job, old)
                    .map_err(|e| e.to_string())?
                    .is_some_and(|owner| owner.is_empty() || owner == self.job_id),
            };
            if intact {
                kept.push(old);
            }
        }
        let mut deleted = Vec::new();
        for old in stored.into_iter().filter(|old| *old < id && !kept.contains(old)) {
            let own = completed.contains(&old)
                || super::is_owned(&self.storage, &self.job, &self.job_id, old).map_err(|e| e.to_string())?;
            if own {
                self.storage.delete_checkpoint(&self.job, old).map_err(|e| e.to_string())?;
                completed.remove(&old);
                deleted.push(old);
            }
        }
        // Savepoints the job went on from are resume points until a kept checkpoint is newer, one
        // that holds no output back (a checkpoint that does is never resumed from).
        if !held {
            let oldest_kept = kept.iter().min().copied().unwrap_or(id);
            super::resume_points::delete_older(&self.storage, &self.job, &self.job_id, oldest_kept)?;
        }
        self.shared.completed(id, &states, &deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_counts_completed_checkpoints_not_abandoned_directories() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open("file://chk", dir.path()).unwrap();
        let sink = StorageSink::new(storage.clone(), ("job", "id"), 128, 2, false).unwrap();
        sink.complete(1, Completed::default()).unwrap();
        sink.complete(2, Completed::default()).unwrap();
        // Checkpoint 3 was abandoned (a file, no _metadata); 4 and 5 complete.
        storage.put(&paths::state_file("job", 3, "op", 0), b"half".to_vec()).unwrap();
        sink.complete(4, Completed::default()).unwrap();
        assert_eq!(storage.checkpoints("job").unwrap(), [2, 4], "two completed ones kept, 3 not counted but deleted");
        sink.complete(5, Completed::default()).unwrap();
        assert_eq!(storage.checkpoints("job").unwrap(), [4, 5]);
    }

    #[test]
    fn a_checkpoint_abandoned_between_two_retained_ones_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open("file://chk", dir.path()).unwrap();
        let sink = StorageSink::new(storage.clone(), ("job", "id"), 128, 3, false).unwrap();
        sink.complete(1, Completed::default()).unwrap();
        // Checkpoint 2 was subsumed by 3 after it stored its snapshots; 4 is still pending.
        storage.put(&paths::state_file("job", 2, "op", 0), b"whole".to_vec()).unwrap();
        storage.put(&paths::state_file("job", 4, "op", 0), b"half".to_vec()).unwrap();
        sink.complete(3, Completed::default()).unwrap();
        assert_eq!(storage.checkpoints("job").unwrap(), [1, 3, 4]);
    }
}
