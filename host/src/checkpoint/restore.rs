//! Restoring from a completed checkpoint: find the newest one whose `_metadata` is intact,
//! give sources their positions and operators the key groups they own, checking every state
//! file against the checksum `_metadata` recorded for it.
use std::ops::Range;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::storage::{Storage, StorageError};
use super::{paths, snapshot};
use crate::runtime::checkpoint_stats::RestoredCheckpoint;
use crate::runtime::{SourcePosition, StateFile};
use crate::state::StateBackend;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Metadata {
    format: u32,
    checkpoint: u64,
    max_parallelism: u32,
    sources: Vec<SourcePosition>,
    states: Vec<StateFile>,
}

/// A completed checkpoint to resume from.
pub struct Restore {
    storage: Storage,
    job: String,
    metadata: Metadata,
}

/// Why a checkpoint cannot be restored.
enum Unusable {
    /// A file is missing, torn or altered: an older checkpoint may do.
    Torn(String),
    /// The storage failed: no checkpoint can be read now.
    Storage(StorageError),
}

impl From<StorageError> for Unusable {
    fn from(e: StorageError) -> Self {
        if e.is_not_found() { Unusable::Torn(e.to_string()) } else { Unusable::Storage(e) }
    }
}

impl From<String> for Unusable {
    fn from(cause: String) -> Self {
        Unusable::Torn(cause)
    }
}

impl From<Unusable> for String {
    fn from(e: Unusable) -> Self {
        match e {
            Unusable::Torn(cause) => cause,
            Unusable::Storage(e) => e.to_string(),
        }
    }
}

/// Reads and checks `_metadata`: its JSON must match its `sha256:` line.
fn read_metadata(storage: &Storage, job: &str, id: u64) -> Result<Metadata, Unusable> {
    let path = paths::metadata(job, id);
    let bytes = storage.get(&path)?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8"))?;
    let (json, checksum) =
        text.trim_end().rsplit_once("\nsha256:").ok_or_else(|| format!("{path} has no sha256 line"))?;
    if hex::encode(Sha256::digest(json.as_bytes())) != checksum {
        return Err(format!("{path} does not match its checksum (torn or changed)").into());
    }
    let metadata: Metadata = serde_json::from_str(json).map_err(|e| format!("{path}: {e}"))?;
    if metadata.format != super::sink::METADATA_FORMAT {
        let supported = super::sink::METADATA_FORMAT;
        return Err(format!("{path} has format {}, this weir reads {supported}", metadata.format).into());
    }
    Ok(metadata)
}

impl Restore {
    /// The newest intact checkpoint of `job` in `storage` with an id of at least `since`; older
    /// ones are tried, with a warning, when a newer one is torn or corrupt. `None` when there is
    /// none.
    pub fn latest(storage: Storage, job: &str, since: u64) -> Result<Option<Restore>, String> {
        let ids = storage.checkpoints(job).map_err(|e| e.to_string())?;
        for id in ids.into_iter().rev().take_while(|&id| id >= since) {
            match Self::check(storage.clone(), job, id) {
                Ok(restore) => return Ok(Some(restore)),
                Err(Unusable::Torn(cause)) => tracing::warn!("skipping checkpoint {id}: {cause}"),
                // Storage that cannot be reached says nothing about this checkpoint: falling back
                // to older ones (or to none, and a fresh start) would be wrong.
                Err(Unusable::Storage(e)) => return Err(e.to_string()),
            }
        }
        Ok(None)
    }

    /// Checkpoint `id` of `job`, after checking that its `_metadata` and every state file it
    /// lists are intact: a torn or altered file is found here, before anything runs, and named.
    pub fn at(storage: Storage, job: &str, id: u64) -> Result<Restore, String> {
        Ok(Self::check(storage, job, id)?)
    }

    fn check(storage: Storage, job: &str, id: u64) -> Result<Restore, Unusable> {
        let metadata = read_metadata(&storage, job, id)?;
        let restore = Restore { storage, job: job.to_string(), metadata };
        for state in &restore.metadata.states {
            let path = restore.state_path(state);
            let bytes = restore.storage.get(&path)?;
            if hex::encode(Sha256::digest(&bytes)) != state.sha256 {
                return Err(format!("{path} does not match the checksum in _metadata (torn or changed)").into());
            }
        }
        Ok(restore)
    }

    fn state_path(&self, state: &StateFile) -> String {
        format!("{}/{}", paths::checkpoint_dir(&self.job, self.id()), state.file)
    }

    /// The checkpoint's id.
    pub fn id(&self) -> u64 {
        self.metadata.checkpoint
    }

    /// Where it is: the storage URL and the checkpoint's directory.
    pub fn location(&self) -> String {
        format!("{}/{}", self.storage.url().trim_end_matches('/'), paths::checkpoint_dir(&self.job, self.id()))
    }

    /// What the checkpoint statistics record of a restore from it, starting now.
    pub fn stats(&self) -> RestoredCheckpoint {
        RestoredCheckpoint {
            id: self.id(),
            restore_timestamp: crate::runtime::now_ms(),
            external_path: self.location(),
        }
    }

    /// The max parallelism the checkpoint was taken with (key groups cannot change).
    pub fn max_parallelism(&self) -> u32 {
        self.metadata.max_parallelism
    }

    /// Where source `uid`'s subtask resumes, if the checkpoint has it.
    pub fn source_position(&self, uid: &str, subtask: u32) -> Option<u64> {
        self.metadata.sources.iter().find(|s| s.uid == uid && s.subtask == subtask).map(|s| s.position)
    }

    /// How many subtasks source `uid` had.
    pub fn source_parallelism(&self, uid: &str) -> usize {
        self.metadata.sources.iter().filter(|s| s.uid == uid).count()
    }

    /// Inserts operator `uid`'s state in `key_groups` into `backend`, from the state files of that
    /// operator that cover any of those key groups (at any parallelism); returns the number of
    /// entries.
    pub fn restore_state(
        &self,
        uid: &str,
        backend: &mut dyn StateBackend,
        key_groups: Range<u32>,
    ) -> Result<u64, String> {
        let mut restored = 0;
        let overlaps = |s: &&StateFile| s.key_groups.start < key_groups.end && key_groups.start < s.key_groups.end;
        for state in self.metadata.states.iter().filter(|s| s.uid == uid).filter(overlaps) {
            // Checked against _metadata when the checkpoint was chosen; the snapshot's own
            // trailer is checked as it is read.
            let path = self.state_path(state);
            let bytes = self.storage.get(&path).map_err(|e| e.to_string())?;
            let snapshot = snapshot::read(&bytes, &path).map_err(|e| e.to_string())?;
            restored += snapshot.restore_into(backend, key_groups.clone()).map_err(|e| e.to_string())?;
        }
        Ok(restored)
    }
}
