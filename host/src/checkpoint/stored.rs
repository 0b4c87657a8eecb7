//! Operator snapshots at rest: [`put`] stores one in the canonical form (one file, sealed with
//! its checksum trailer) or as a disk backend's own files (native), an incremental checkpoint
//! storing each SST file once in the job's `shared/` directory ([`SharedFiles`]); [`verify`]
//! checks a stored one against the checksums `_metadata` records, and [`fetch_native`] copies
//! (or, from local storage, hard-links) a native one's files into a directory for its backend to
//! open.
use std::path::Path;

use sha2::{Digest, Sha256};

use super::checked::Unusable;
use super::paths;
use super::shared::SharedFiles;
use super::storage::Storage;
use crate::runtime::{NativeState, NativeStoredFile, StateFile, StateSnapshot, StoredState};
use crate::state::NativeFiles;

/// The form a sink stores snapshots in.
pub(crate) enum Form<'a> {
    /// The canonical form, whatever the backend.
    Canonical,
    /// A disk backend's own files (the canonical form for a backend that has none); with
    /// `shared`, SST files go to the job's `shared/` directory, once.
    Native {
        /// The shared files, and the checkpoint that stores this snapshot.
        shared: Option<(&'a SharedFiles, u64)>,
    },
}

/// Stores operator `uid`'s subtask `subtask`'s snapshot in directory `dir` (a checkpoint's or a
/// savepoint's) in form `form`; returns what `_metadata` records of it and the bytes uploaded.
pub(crate) fn put(
    storage: &Storage,
    dir: &str,
    (uid, subtask): (&str, u32),
    snapshot: StateSnapshot,
    form: Form<'_>,
) -> Result<(StateFile, u64), String> {
    let _phase = tracing::debug_span!("checkpoint_async", dir, operator = uid, subtask).entered();
    let StateSnapshot { key_groups, mut body, broadcast, part } = snapshot;
    // A part of a subtask's key groups is named by where it starts.
    let name = match &part {
        Some(_) => format!("{}-{}", paths::native_dir_name(uid, subtask), key_groups.start),
        None => paths::native_dir_name(uid, subtask),
    };
    let canary = part.and_then(|p| p.canary);
    let state = |stored| StateFile { uid: uid.to_string(), subtask, key_groups, stored, broadcast, canary };
    if let Form::Native { shared } = form
        && let Some(files) = body.native().map_err(|e| format!("cannot take the snapshot: {e}"))?
    {
        let (native, uploaded) = put_native(storage, dir, name, files, shared)?;
        return Ok((state(StoredState::Native(native)), uploaded));
    }
    let mut bytes = body.encode().map_err(|e| format!("cannot encode the snapshot: {e}"))?;
    crate::state::canonical::seal(&mut bytes);
    let file = paths::state_file_name(&name);
    let (sha256, size) = (hex::encode(Sha256::digest(&bytes)), bytes.len() as u64);
    storage.put(&format!("{dir}/{file}"), bytes).map_err(|e| e.to_string())?;
    Ok((state(StoredState::Canonical { file, sha256, size }), size))
}

/// Stores a native snapshot's files: SST files into the shared directory when there is one
/// (unless an earlier checkpoint stored them already), every other file into `dir/native_dir`.
fn put_native(
    storage: &Storage,
    dir: &str,
    native_dir: String,
    files: NativeFiles<'_>,
    shared: Option<(&SharedFiles, u64)>,
) -> Result<(NativeState, u64), String> {
    let mut stored = Vec::with_capacity(files.files.len());
    let mut uploaded = 0;
    for file in files.files {
        let local = files.dir.join(&file.name);
        let shared_name = file.shared_name.filter(|_| shared.is_some());
        let (size, sha256) = match (shared, &shared_name) {
            (Some((shared, checkpoint)), Some(name)) => match shared.reuse(name, checkpoint) {
                Some(known) => known,
                None => {
                    let (size, sha256) = upload(storage, &local, &shared.path(name))?;
                    shared.stored(name, size, &sha256, checkpoint);
                    uploaded += size;
                    (size, sha256)
                }
            },
            _ => {
                let (size, sha256) = upload(storage, &local, &format!("{dir}/{native_dir}/{}", file.name))?;
                uploaded += size;
                (size, sha256)
            }
        };
        stored.push(NativeStoredFile { name: file.name, size, sha256, shared: shared_name });
    }
    let native =
        NativeState { native: files.format.to_string(), dir: native_dir, states: files.states.to_vec(), files: stored };
    Ok((native, uploaded))
}

/// Copies local file `local` to `path` in `storage`; returns its size and checksum.
fn upload(storage: &Storage, local: &Path, path: &str) -> Result<(u64, String), String> {
    let bytes = std::fs::read(local).map_err(|e| format!("cannot read {}: {e}", local.display()))?;
    let (size, sha256) = (bytes.len() as u64, hex::encode(Sha256::digest(&bytes)));
    storage.put(path, bytes).map_err(|e| e.to_string())?;
    Ok((size, sha256))
}

/// Where file `file` of native snapshot `native` stored in directory `dir` is: in `dir`, or,
/// shared, in the `shared/` directory of job `job` (checkpoints only: savepoints share nothing).
fn native_path(dir: &str, job: Option<&str>, native: &NativeState, file: &NativeStoredFile) -> Result<String, String> {
    if !paths::is_plain_file_name(&file.name) || !paths::is_plain_file_name(&native.dir) {
        return Err(format!("{dir}/_metadata lists the file \"{}/{}\", which is not weir's", native.dir, file.name));
    }
    match (&file.shared, job) {
        (None, _) => Ok(format!("{dir}/{}/{}", native.dir, file.name)),
        (Some(shared), Some(job)) if paths::is_plain_file_name(shared) => Ok(paths::shared_file(job, shared)),
        (Some(shared), _) => Err(format!("{dir}/_metadata lists the shared file \"{shared}\", which is not weir's")),
    }
}

/// Reads file `path` of `storage`, refusing it unless its SHA-256 is `sha256`.
fn get_checked(storage: &Storage, path: &str, sha256: &str) -> Result<Vec<u8>, Unusable> {
    let bytes = storage.get(path)?;
    if hex::encode(Sha256::digest(&bytes)) != sha256 {
        let shown = storage.display(path);
        return Err(format!("{shown} does not match the checksum in _metadata (torn or changed)").into());
    }
    Ok(bytes)
}

/// Checks every file of the snapshot `state`, stored in directory `dir`, against the checksum
/// `_metadata` records: a torn or altered file is found before anything runs.
pub(crate) fn verify(storage: &Storage, dir: &str, job: Option<&str>, state: &StateFile) -> Result<(), Unusable> {
    let check = |path: &str, sha256: &str| get_checked(storage, path, sha256).map(drop);
    match &state.stored {
        StoredState::Canonical { file, sha256, .. } => check(&format!("{dir}/{file}"), sha256),
        StoredState::Native(native) => {
            native.files.iter().try_for_each(|file| check(&native_path(dir, job, native, file)?, &file.sha256))
        }
    }
}

/// Copies the files of native snapshot `native`, stored in directory `dir`, into the local
/// directory `into`: SST files from local storage are hard-linked (they never change), the rest
/// copied, each checked against its checksum when its bytes are read.
pub(crate) fn fetch_native(
    storage: &Storage,
    dir: &str,
    job: Option<&str>,
    native: &NativeState,
    into: &Path,
) -> Result<(), String> {
    for file in &native.files {
        let path = native_path(dir, job, native, file)?;
        let to = into.join(&file.name);
        let linked = file.name.ends_with(".sst")
            && storage.local_path(&path).is_some_and(|from| std::fs::hard_link(from, &to).is_ok());
        if linked {
            continue;
        }
        let bytes = get_checked(storage, &path, &file.sha256)?;
        std::fs::write(&to, bytes).map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    }
    Ok(())
}
