//! A RocksDB backend's files: the checkpoints its snapshots are ([`Checkpointed`]), stored as
//! they are (native) or encoded in the canonical form, and the restore of a database from native
//! snapshots' files, opened in place and clipped to its key groups or copied entry by entry.
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{DB, Options, WriteBatch};

use super::{
    FORMAT, Live, PendingCheckpoint, Removed, RocksDbBackend, db_error, key_group_start, list_element, lock,
    map_record, record_key, scan_db,
};
use crate::state::{
    NativeFile, NativeFiles, NativePart, SnapshotBody, StateDescriptor, StateEntry, StateError, StateItem, StateKind,
};

/// Entries a copy writes in one batch.
const COPY_BATCH: usize = 16_384;

/// The files of the checkpoint in `dir` of the database named `unique`: its SST files have
/// shared names (`shared_names` for those it was restored with, else `<unique>-<file>`).
pub(super) fn list(
    dir: &Path,
    unique: &str,
    shared_names: &HashMap<String, String>,
) -> Result<Vec<NativeFile>, StateError> {
    let io = |e: std::io::Error| StateError::Storage { cause: format!("{}: {e}", dir.display()) };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let size = entry.metadata().map_err(io)?.len();
        let shared_name = name
            .ends_with(".sst")
            .then(|| shared_names.get(&name).cloned().unwrap_or_else(|| format!("{unique}-{name}")));
        files.push(NativeFile { name, size, shared_name });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// A snapshot of one subtask's database at a barrier: the values frozen there, then (once
/// settled, on the uploader thread) a RocksDB checkpoint, stored as its files or encoded in the
/// canonical form, and deleted once it is (or once it is dropped unstored).
pub(super) struct Checkpointed {
    pub(super) live: Arc<Live>,
    pub(super) pending: Arc<PendingCheckpoint>,
    /// Its files, once taken.
    pub(super) files: Vec<NativeFile>,
    pub(super) unique: String,
    pub(super) shared_names: HashMap<String, String>,
    pub(super) kinds: Vec<StateKind>,
    pub(super) key_groups: Range<u32>,
    pub(super) states: Vec<StateDescriptor>,
    pub(super) read_only: Options,
}

impl Checkpointed {
    /// Takes its RocksDB checkpoint if the operator has not yet (the asynchronous part).
    fn taken(&self) -> Result<&Path, StateError> {
        if lock(&self.pending.outcome).is_none() {
            drop(self.live.settle()?);
        }
        match lock(&self.pending.outcome).clone() {
            Some(Ok(())) => Ok(&self.pending.dir.0),
            Some(Err(cause)) => Err(StateError::Storage { cause }),
            None => Err(StateError::Storage { cause: "the checkpoint was never taken (a weir bug)".to_string() }),
        }
    }
}

impl SnapshotBody for Checkpointed {
    fn encode(self: Box<Self>) -> Result<Vec<u8>, StateError> {
        let db = DB::open_for_read_only(&self.read_only, self.taken()?, false).map_err(db_error)?;
        let view = ReadOnly { db, kinds: self.kinds.clone() };
        crate::state::canonical::encode(&view, self.key_groups.clone(), &self.states)
    }

    fn native(&mut self) -> Result<Option<NativeFiles<'_>>, StateError> {
        let dir = self.taken()?.to_path_buf();
        self.files = list(&dir, &self.unique, &self.shared_names)?;
        let files = self.files.clone();
        Ok(Some(NativeFiles { format: FORMAT, dir: &self.pending.dir.0, states: &self.states, files }))
    }
}

/// A snapshot that could not be taken: its error, when the uploader stores it.
pub(super) struct Failed(pub(super) String);

impl SnapshotBody for Failed {
    fn encode(self: Box<Self>) -> Result<Vec<u8>, StateError> {
        Err(StateError::Storage { cause: self.0 })
    }
}

/// A checkpoint opened to be read: all the canonical encoder needs is a scan.
struct ReadOnly {
    db: DB,
    kinds: Vec<StateKind>,
}

impl crate::state::canonical::Scan for ReadOnly {
    fn scan_entries(&self, key_groups: Range<u32>, visit: &mut dyn FnMut(StateEntry<'_>)) -> Result<(), StateError> {
        scan_db(&self.db, &self.kinds, key_groups, None, visit)
    }
}

/// Visits every entry of the database whose files are in `dir` (a native snapshot fetched
/// there), holding states `kinds`, opened read-only.
pub fn scan_files(dir: &Path, kinds: &[StateKind], visit: &mut dyn FnMut(StateEntry<'_>)) -> Result<(), StateError> {
    let db = DB::open_for_read_only(&super::records::record_options(), dir, false).map_err(db_error)?;
    scan_db(&db, kinds, 0..u32::MAX, None, visit)
}

/// Whether `part`'s records mean the same as those of a database of states `kinds`: then it
/// is opened in place, else copied with its states renumbered.
pub(super) fn keeps_indices(part: &NativePart, kinds: &[StateKind]) -> bool {
    part.kinds == kinds && (0u32..).zip(&part.to).all(|(i, to)| *to == Some(i))
}

impl RocksDbBackend {
    /// Deletes every record outside its key groups, with two range deletions: a database
    /// restored from a snapshot that held more keeps only its own.
    pub(super) fn clip(&self) -> Result<(), StateError> {
        self.write_back()?;
        self.delete_range(&[], &key_group_start(self.key_groups.start))?;
        self.delete_range(&key_group_start(self.key_groups.end), &[u8::MAX; 16])
    }

    /// Copies the entries of `part` in its key groups, each saved state into the declared state
    /// it goes to, in write batches; deletes `part`'s directory.
    pub(super) fn copy_from(&mut self, part: NativePart) -> Result<(), String> {
        self.write_back().map_err(|e| e.to_string())?;
        let dir = Removed(part.dir);
        let db = DB::open_for_read_only(&self.read_only, &dir.0, false)
            .map_err(|e| format!("cannot open the restored RocksDB files in {}: {e}", dir.0.display()))?;
        let range = part.key_groups.start.max(self.key_groups.start)..part.key_groups.end.min(self.key_groups.end);
        let mut batch = WriteBatch::default();
        let mut written = Ok(());
        let write = |batch| self.write(batch).map_err(|e| e.to_string());
        scan_db(&db, &part.kinds, range, None, &mut |e| {
            let Some(state) = part.to.get(e.state as usize).copied().flatten() else { return };
            match e.item {
                StateItem::Value(v) => batch.put(record_key(e.key_group, state, e.key), v),
                StateItem::MapEntry(map_key, v) => batch.put(map_record(e.key_group, state, e.key, map_key), v),
                StateItem::ListElement(v) => batch.merge(record_key(e.key_group, state, e.key), list_element(v)),
            }
            if batch.len() >= COPY_BATCH && written.is_ok() {
                written = write(std::mem::take(&mut batch));
            }
        })
        .map_err(|e| e.to_string())?;
        written.and_then(|()| write(batch))
    }
}
