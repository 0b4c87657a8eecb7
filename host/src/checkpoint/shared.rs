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
        let mut names: Vec<String> = storage.list(&dir).map_err(|e| e.to_string())?;
        // Locally also what an upload cut short left (staged files object stores do not list).
        if let Some(local) = storage.local_path(&dir) {
            let entries = std::fs::read_dir(local).into_iter().flatten().flatten();
            names.extend(entries.map(|e| format!("{dir}/{}", e.file_name().to_string_lossy())));
        }
        names.sort_unstable();
        names.dedup();
        for path in names {
            let name = path.rsplit('/').next().unwrap_or_default();
            if !registry.files.contains_key(name) {
                tracing::info!("deleting {}: no checkpoint references it", storage.display(&path));
                match storage.local_path(&path) {
                    Some(local) => match std::fs::remove_file(&local) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(format!("cannot delete {}: {e}", local.display()));
                        }
                        _ => {}
                    },
                    None => storage.delete_file(&path).map_err(|e| e.to_string())?,
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{NativeState, NativeStoredFile};

    /// A snapshot referencing shared files `names`.
    fn state(names: &[&str]) -> StateFile {
        let file = |name: &&str| NativeStoredFile {
            name: format!("{name}.sst"),
            size: 4,
            sha256: String::new(),
            shared: Some(name.to_string()),
        };
        let native = NativeState {
            native: "rocksdb".into(),
            dir: "op-0".into(),
            states: Vec::new(),
            files: names.iter().map(file).collect(),
        };
        StateFile {
            uid: "op".into(),
            subtask: 0,
            key_groups: 0..1,
            stored: StoredState::Native(native),
            broadcast: None,
            canary: None,
        }
    }

    #[test]
    fn a_file_goes_once_no_kept_or_later_checkpoint_needs_it_and_orphans_go_at_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open("file://chk", dir.path()).unwrap();
        let shared = dir.path().join("chk/job/shared");
        std::fs::create_dir_all(&shared).unwrap();
        for orphan in ["left-by-a-crash", "cut-short#3"] {
            std::fs::write(shared.join(orphan), b"x").unwrap();
        }
        let files = SharedFiles::open(storage.clone(), "job").unwrap();
        assert!(!shared.exists(), "orphans are deleted, and the directory they leave empty");
        let store = |name: &str, checkpoint| {
            storage.put(&files.path(name), b"sst!".to_vec()).unwrap();
            files.stored(name, 4, "", checkpoint);
        };
        // Checkpoint 1 stores a and b; 2 reuses a and stores c; 3 (in progress) reuses c.
        store("a", 1);
        store("b", 1);
        files.completed(1, &[state(&["a", "b"])], &[]).unwrap();
        assert!(files.reuse("a", 2).is_some());
        store("c", 2);
        assert!(files.reuse("c", 3).is_some());
        // 2 completes and 1 is deleted: b goes; a (kept by 2) and c (2 and 3) stay.
        files.completed(2, &[state(&["a", "c"])], &[1]).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&shared)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a", "c"]);
        assert!(files.reuse("b", 3).is_none(), "a deleted file is stored again, not referenced");
    }
}
