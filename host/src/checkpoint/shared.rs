//! [`SharedFiles`]: the SST files incremental checkpoints share, stored once in the job's
//! `shared/` directory and referenced from the `_metadata` of every checkpoint that holds them.
//!
//! A file is deleted once no kept checkpoint references it and no checkpoint after the one that
//! just completed has used it (a checkpoint still in progress may have). Only after a
//! checkpoint's `_metadata` is stored and the checkpoints it replaces are deleted does it go, so a
//! crash never leaves a kept checkpoint referencing a deleted file. What a crash leaves behind
//! instead (files of a checkpoint that never completed, or only of checkpoints deleted just
//! before) is found when the job next starts, or is canceled: any file in `shared/` that no
//! intact checkpoint of the job's directory references is an orphan and is deleted.
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::paths;
use super::storage::Storage;
use crate::runtime::{StateFile, StoredState};

/// The shared files of one job's checkpoints.
pub(crate) struct SharedFiles {
    storage: Storage,
    job: String,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    /// Every stored shared file by name.
    files: HashMap<String, SharedFile>,
    /// The shared files each kept checkpoint references.
    kept: BTreeMap<u64, Vec<String>>,
}

struct SharedFile {
    size: u64,
    sha256: String,
    /// The newest checkpoint that stored or referenced it.
    last_used: u64,
}

/// The shared files checkpoint `states` reference.
fn shared_names(states: &[StateFile]) -> Vec<(String, u64, String)> {
    let native = states.iter().filter_map(|s| match &s.stored {
        StoredState::Native(native) => Some(native),
        StoredState::Canonical { .. } => None,
    });
    let files = native.flat_map(|n| &n.files);
    files.filter_map(|f| Some((f.shared.clone()?, f.size, f.sha256.clone()))).collect()
}

impl SharedFiles {
    /// The shared files of job `job`'s checkpoints in `storage`: those its intact checkpoints
    /// reference; every other file in its `shared/` directory is an orphan and is deleted.
    pub(crate) fn open(storage: Storage, job: &str) -> Result<Self, String> {
        let mut registry = Registry::default();
        for id in storage.checkpoints(job).map_err(|e| e.to_string())? {
            let states = match super::restore::stored_states(&storage, job, id) {
                Ok(states) => states,
                Err(super::checked::Unusable::Torn(_)) => continue,
                Err(super::checked::Unusable::Storage(e)) => return Err(e.to_string()),
            };
            let mut names = Vec::new();
            for (name, size, sha256) in shared_names(&states) {
                let file = registry.files.entry(name.clone()).or_insert(SharedFile { size, sha256, last_used: id });
                file.last_used = file.last_used.max(id);
                names.push(name);
            }
            registry.kept.insert(id, names);
        }
        let dir = paths::shared_dir(job);
        for path in storage.list(&dir).map_err(|e| e.to_string())? {
            let name = path.rsplit('/').next().unwrap_or_default();
            if !registry.files.contains_key(name) {
                tracing::info!("deleting {}: no checkpoint references it", storage.display(&path));
                storage.delete_file(&path).map_err(|e| e.to_string())?;
            }
        }
        let _ = storage.remove_dir_if_empty(&dir);
        Ok(SharedFiles { storage, job: job.to_string(), registry: Mutex::new(registry) })
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path of shared file `name`.
    pub(crate) fn path(&self, name: &str) -> String {
        paths::shared_file(&self.job, name)
    }

    /// The size and checksum of shared file `name` if it is stored, which checkpoint
    /// `checkpoint` then references instead of storing it again.
    pub(crate) fn reuse(&self, name: &str, checkpoint: u64) -> Option<(u64, String)> {
        let mut registry = self.registry();
        let file = registry.files.get_mut(name)?;
        file.last_used = file.last_used.max(checkpoint);
        Some((file.size, file.sha256.clone()))
    }

    /// Checkpoint `checkpoint` stored shared file `name`.
    pub(crate) fn stored(&self, name: &str, size: u64, sha256: &str, checkpoint: u64) {
        let file = SharedFile { size, sha256: sha256.to_string(), last_used: checkpoint };
        self.registry().files.insert(name.to_string(), file);
    }

    /// Checkpoint `id`, holding `states`, completed and is kept; checkpoints `deleted` are not
    /// any more: the shared files nothing needs any more are deleted.
    pub(crate) fn completed(&self, id: u64, states: &[StateFile], deleted: &[u64]) -> Result<(), String> {
        let mut registry = self.registry();
        let names = shared_names(states).into_iter().map(|(name, ..)| name).collect();
        registry.kept.insert(id, names);
        for old in deleted {
            registry.kept.remove(old);
        }
        let referenced: std::collections::HashSet<&String> = registry.kept.values().flatten().collect();
        let unneeded: Vec<String> = registry
            .files
            .iter()
            .filter(|(name, file)| file.last_used <= id && !referenced.contains(name))
            .map(|(name, _)| name.clone())
            .collect();
        // Deleted with the registry locked: a checkpoint storing the same file again meanwhile
        // would lose it.
        for name in unneeded {
            self.storage.delete_file(&self.path(&name)).map_err(|e| e.to_string())?;
            registry.files.remove(&name);
        }
        Ok(())
    }
}

/// Deletes the files in job `job`'s `shared/` directory that no intact checkpoint references
/// (after its checkpoints were deleted on cancellation).
pub fn delete_unreferenced_shared_files(storage: &Storage, job: &str) -> Result<(), String> {
    SharedFiles::open(storage.clone(), job).map(drop)
}
