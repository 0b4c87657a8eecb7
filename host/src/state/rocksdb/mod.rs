//! [`RocksDbBackend`]: keyed state on local disk in RocksDB, for state larger than memory. Each
//! operator subtask has a database of its own under the job's `local-dir`; every database of a
//! job shares one block cache and one write-buffer budget ([`RocksDbBackends`], Flink's managed
//! memory), so a job's memory is bounded whatever its parallelism.
//!
//! Records are laid out key group first ([`records`]).
//!
//! A checkpoint's synchronous part is a RocksDB checkpoint (a flush, then hard links to the
//! database's files), so processing goes on at once; the uploader stores its files as they are
//! (a native checkpoint or savepoint) or reads it and writes the canonical snapshot file, then
//! deletes it ([`files`]). A restore from native files opens them in place when it can.
mod databases;
mod files;
mod records;
mod values;

pub use databases::RocksDbBackends;
pub use files::scan_files;

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::{DB, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions};

use self::records::{ListElements, key_group_start, list_element, map_record, prefix_end, record_key, scan_db};
use self::values::ValueCache;
use super::{SnapshotBody, StateBackend, StateDescriptor, StateEntry, StateError, StateKind};
use crate::key_group::KeyGroup;

/// What a native snapshot of a [`RocksDbBackend`] says its format is.
pub const FORMAT: &str = "rocksdb";

/// A directory deleted when it is dropped. As a field declared after a database, it is deleted
/// once the database has closed (fields drop in declaration order).
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One operator subtask's keyed state in RocksDB. Its database is deleted when it is dropped
/// (and the snapshot still being taken of it, if any, is done): what lasts is in checkpoints and
/// savepoints.
pub struct RocksDbBackend {
    live: Arc<Live>,
    key_groups: Range<u32>,
    kinds: Vec<StateKind>,
    /// Numbers the checkpoints taken of it.
    checkpoints: AtomicU64,
    /// Unique to this database among all databases: its SST files' shared names start with it.
    unique: String,
    /// The shared names of the SST files it was restored with (file name to shared name).
    shared_names: HashMap<String, String>,
    /// Options to open its checkpoints read-only with.
    read_only: Options,
}

/// The live database and its value cache, shared by the backend and the snapshot whose RocksDB
/// checkpoint is still to be taken.
struct Live {
    db: DB,
    /// The database's directory, after `db`.
    dir: Removed,
    writes: WriteOptions,
    /// Value state, read ahead and written back in batches.
    values: Mutex<ValueCache>,
    /// Held by whoever writes to the database, which happens only once the values frozen at the
    /// latest barrier are in it and its checkpoint is taken ([`Live::settle`]): nothing written
    /// after a barrier reaches that barrier's checkpoint.
    writer: Mutex<()>,
}

/// A RocksDB checkpoint to take once the values frozen at its barrier are in the database.
struct PendingCheckpoint {
    /// Where it goes (deleted when the last holder lets it go).
    dir: Removed,
    /// Whether it was taken, once it is settled.
    outcome: Mutex<Option<Result<(), String>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Live {
    fn values(&self) -> MutexGuard<'_, ValueCache> {
        lock(&self.values)
    }

    /// Writes the values frozen at the latest barrier to the database and takes that barrier's
    /// checkpoint (unless nobody waits for it any more), if that is not done yet: on the uploader
    /// thread, as the asynchronous part of the checkpoint, or on the operator's before it writes
    /// to the database itself. Returns the guard to write to the database under.
    fn settle(&self) -> Result<MutexGuard<'_, ()>, StateError> {
        let writer = lock(&self.writer);
        let Some(frozen) = self.values().frozen() else { return Ok(writer) };
        let written = frozen.write(&self.db, &self.writes);
        if let Some(pending) = frozen.checkpoint.upgrade() {
            let taken = match &written {
                Ok(()) => rocksdb::checkpoint::Checkpoint::new(&self.db)
                    .and_then(|c| c.create_checkpoint(&pending.dir.0))
                    .map_err(rocksdb::Error::into_string),
                Err(e) => Err(e.to_string()),
            };
            *lock(&pending.outcome) = Some(taken);
        }
        // Once written, reads find the values in the database; else they stay frozen, readable.
        written?;
        self.values().thaw();
        Ok(writer)
    }
}

fn db_error(e: rocksdb::Error) -> StateError {
    StateError::Storage { cause: e.into_string() }
}

impl RocksDbBackend {
    /// Checks that `state` is declared as `kind` and `kg` is held.
    fn check(&self, state: u32, kind: StateKind, kg: KeyGroup) -> Result<(), StateError> {
        if self.kinds.get(state as usize) != Some(&kind) {
            return Err(StateError::WrongState { state, expected: kind });
        }
        self.check_key_group(kg)
    }

    fn check_key_group(&self, kg: KeyGroup) -> Result<(), StateError> {
        if !self.key_groups.contains(&u32::from(kg)) {
            return Err(StateError::KeyGroupNotOwned { key_group: kg, range: self.key_groups.clone() });
        }
        Ok(())
    }

    fn get_into(&self, record: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        match self.live.db.get_pinned(record).map_err(db_error)? {
            Some(value) => {
                out.extend_from_slice(&value);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Writes the value cache back, so that the database holds every entry (before a scan or
    /// a range deletion, or when the cache is full).
    fn write_back(&self) -> Result<(), StateError> {
        let _writer = self.live.settle()?;
        self.live.values().write_back(&self.live.db, &self.live.writes)
    }

    /// Writes `batch` to the database.
    fn write(&self, batch: WriteBatch) -> Result<(), StateError> {
        let _writer = self.live.settle()?;
        self.live.db.write_opt(batch, &self.live.writes).map_err(db_error)
    }

    fn delete_range(&self, from: &[u8], to: &[u8]) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        batch.delete_range(from, to);
        self.write(batch)
    }

    /// Puts `value` under `record`.
    fn put(&self, record: &[u8], value: &[u8]) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        batch.put(record, value);
        self.write(batch)
    }
}

impl StateBackend for RocksDbBackend {
    fn value_get(&self, state: u32, kg: KeyGroup, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        self.check(state, StateKind::Value, kg)?;
        self.live.values().get(&self.live.db, &record_key(kg, state, key), out)
    }

    fn value_put(&mut self, state: u32, kg: KeyGroup, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.check(state, StateKind::Value, kg)?;
        let full = self.live.values().put(record_key(kg, state, key), Some(value));
        if full { self.write_back() } else { Ok(()) }
    }

    fn value_prefetch(&self, state: u32, kg: KeyGroup, key: &[u8]) {
        if self.check(state, StateKind::Value, kg).is_ok() {
            self.live.values().want(record_key(kg, state, key));
        }
    }

    fn map_get(
        &self,
        state: u32,
        kg: KeyGroup,
        key: &[u8],
        map_key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateError> {
        self.check(state, StateKind::Map, kg)?;
        let record = map_record(kg, state, key, map_key);
        self.get_into(&record, out)
    }

    fn map_put(
        &mut self,
        state: u32,
        kg: KeyGroup,
        key: &[u8],
        map_key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        self.check(state, StateKind::Map, kg)?;
        self.put(&map_record(kg, state, key, map_key), value)
    }

    fn map_remove(&mut self, state: u32, kg: KeyGroup, key: &[u8], map_key: &[u8]) -> Result<(), StateError> {
        self.check(state, StateKind::Map, kg)?;
        let mut batch = WriteBatch::default();
        batch.delete(map_record(kg, state, key, map_key));
        self.write(batch)
    }

    fn map_entries(
        &self,
        state: u32,
        kg: KeyGroup,
        key: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError> {
        self.check(state, StateKind::Map, kg)?;
        let prefix = record_key(kg, state, key);
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(prefix_end(&prefix));
        for item in self.live.db.iterator_opt(IteratorMode::From(&prefix, Direction::Forward), options) {
            let (record, value) = item.map_err(db_error)?;
            visit(&record[prefix.len()..], &value);
        }
        Ok(())
    }

    fn list_get(&self, state: u32, kg: KeyGroup, key: &[u8], visit: &mut dyn FnMut(&[u8])) -> Result<(), StateError> {
        self.check(state, StateKind::List, kg)?;
        let Some(list) = self.live.db.get_pinned(record_key(kg, state, key)).map_err(db_error)? else { return Ok(()) };
        for element in ListElements(&list) {
            visit(element.ok_or_else(|| StateError::Storage { cause: "a stored list is torn".to_string() })?);
        }
        Ok(())
    }

    fn list_append(&mut self, state: u32, kg: KeyGroup, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.check(state, StateKind::List, kg)?;
        let mut batch = WriteBatch::default();
        batch.merge(record_key(kg, state, key), list_element(value));
        self.write(batch)
    }

    fn clear(&mut self, state: u32, kg: KeyGroup, key: &[u8]) -> Result<(), StateError> {
        let kind = *self.kinds.get(state as usize).ok_or(StateError::UnknownState { state })?;
        self.check_key_group(kg)?;
        let record = record_key(kg, state, key);
        match kind {
            StateKind::Map | StateKind::Broadcast => self.delete_range(&record, &prefix_end(&record)),
            StateKind::List => {
                let mut batch = WriteBatch::default();
                batch.delete(record);
                self.write(batch)
            }
            StateKind::Value => {
                let full = self.live.values().put(record, None);
                if full { self.write_back() } else { Ok(()) }
            }
        }
    }

    /// Value state first goes from the cache to the database; map and list writes are there.
    fn scan_where(
        &self,
        key_groups: Range<u32>,
        only: Option<u32>,
        visit: &mut dyn FnMut(StateEntry<'_>),
    ) -> Result<(), StateError> {
        if only.is_none_or(|state| self.kinds.get(state as usize) == Some(&StateKind::Value)) {
            self.write_back()?;
        }
        scan_db(&self.live.db, &self.kinds, key_groups, only, visit)
    }

    fn drop_key_groups(&mut self, key_groups: Range<u32>) -> Result<(), StateError> {
        if key_groups.start < self.key_groups.start || key_groups.end > self.key_groups.end {
            let key_group =
                if key_groups.start < self.key_groups.start { key_groups.start } else { key_groups.end - 1 };
            let key_group = KeyGroup::try_from(key_group).unwrap_or(KeyGroup::MAX);
            return Err(StateError::KeyGroupNotOwned { key_group, range: self.key_groups.clone() });
        }
        self.write_back()?;
        self.delete_range(&key_group_start(key_groups.start), &key_group_start(key_groups.end))
    }

    fn key_count(&self) -> usize {
        let mut keys = std::collections::HashSet::new();
        let _ = self.scan(self.key_groups.clone(), &mut |e| {
            keys.insert((e.state, e.key_group, e.key.to_vec()));
        });
        keys.len()
    }

    fn snapshot(
        &self,
        key_groups: Range<u32>,
        states: &[StateDescriptor],
    ) -> Result<Box<dyn SnapshotBody>, StateError> {
        // The values of the barrier before, if their checkpoint is still to be taken, go first.
        drop(self.live.settle()?);
        let n = self.checkpoints.fetch_add(1, Ordering::Relaxed);
        let dir = self.live.dir.0.with_extension(format!("chk-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        let pending = Arc::new(PendingCheckpoint { dir: Removed(dir), outcome: Mutex::new(None) });
        self.live.values().freeze(Arc::downgrade(&pending));
        Ok(Box::new(files::Checkpointed {
            live: self.live.clone(),
            pending,
            files: Vec::new(),
            unique: self.unique.clone(),
            shared_names: self.shared_names.clone(),
            kinds: self.kinds.clone(),
            key_groups,
            states: states.to_vec(),
            read_only: self.read_only.clone(),
        }))
    }

    /// A RocksDB checkpoint too: hard links, not a copy, and the database goes on as it is.
    fn freeze(
        self: Box<Self>,
        key_groups: Range<u32>,
        states: &[StateDescriptor],
    ) -> (Box<dyn SnapshotBody>, Box<dyn StateBackend>) {
        match self.snapshot(key_groups.clone(), states) {
            Ok(body) => (body, self),
            Err(e) => (Box::new(files::Failed(e.to_string())), self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NativePart;

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let backends = RocksDbBackends::new(dir.path(), "job", 16 << 20).unwrap();
        super::super::conformance::run(&|range, kinds| -> Box<dyn StateBackend> {
            Box::new(backends.open(range, kinds).unwrap())
        });
    }

    #[test]
    fn a_checkpoint_encodes_what_the_database_held_at_it() {
        let dir = tempfile::tempdir().unwrap();
        let backends = RocksDbBackends::new(dir.path(), "job", 16 << 20).unwrap();
        let kinds = [StateKind::Value, StateKind::List];
        let states =
            [StateDescriptor::new("count", StateKind::Value, 1), StateDescriptor::new("seen", StateKind::List, 1)];
        let mut db = backends.open(0..4, &kinds).unwrap();
        let mut memory = super::super::MemoryBackend::new(0..4, &kinds);
        for b in [&mut db as &mut dyn StateBackend, &mut memory] {
            b.value_put(0, 1, b"a", b"1").unwrap();
            b.list_append(1, 3, b"b", b"x").unwrap();
            b.list_append(1, 3, b"b", b"y").unwrap();
        }
        db.value_put(0, 2, b"c", b"3").unwrap();
        let snapshot = db.snapshot(0..4, &states).unwrap();
        // Until the uploader takes the checkpoint, the values of the barrier are read from where
        // they were set aside, and writes after it go on.
        let mut read = Vec::new();
        assert!(db.value_get(0, 1, b"a", &mut read).unwrap());
        assert_eq!(read, b"1");
        db.value_put(0, 1, b"a", b"after the barrier").unwrap();
        db.clear(0, 2, b"c").unwrap();
        db.list_append(1, 3, b"b", b"after").unwrap();
        memory.value_put(0, 2, b"c", b"3").unwrap();
        let expected = super::super::canonical::encode(&memory, 0..4, &states).unwrap();
        assert_eq!(snapshot.encode().unwrap(), expected, "the same bytes as the memory backend's");
        read.clear();
        assert!(db.value_get(0, 1, b"a", &mut read).unwrap() && !db.value_get(0, 2, b"c", &mut read).unwrap());
        assert_eq!(read, b"after the barrier");
        let job = dir.path().join("job");
        let leftovers: Vec<_> = std::fs::read_dir(&job).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 1, "the checkpoint is deleted once encoded: {leftovers:?}");
        drop(db);
        assert_eq!(std::fs::read_dir(&job).unwrap().count(), 0, "the database goes with its backend");
    }

    #[test]
    fn a_snapshot_dropped_before_it_is_stored_loses_nothing_and_leaves_no_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let backends = RocksDbBackends::new(dir.path(), "job", 16 << 20).unwrap();
        let states = [StateDescriptor::new("count", StateKind::Value, 1)];
        let mut db = backends.open(0..4, &[StateKind::Value]).unwrap();
        db.value_put(0, 1, b"a", b"1").unwrap();
        drop(db.snapshot(0..4, &states).unwrap());
        db.value_put(0, 2, b"b", b"2").unwrap();
        let second = db.snapshot(0..4, &states).unwrap();
        let mut entries = Vec::new();
        db.scan(0..4, &mut |e| entries.push(format!("{:?}", e.item))).unwrap();
        assert_eq!(entries, ["Value([49])", "Value([50])"], "both values reached the database");
        drop(second);
        let left: Vec<_> =
            std::fs::read_dir(dir.path().join("job")).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 1, "only the database, no checkpoint: {left:?}");
    }

    /// Copies the files of `snapshot` into a new directory of `backends`, as a restore fetches
    /// them.
    fn fetched(
        backends: &RocksDbBackends,
        snapshot: &mut dyn SnapshotBody,
        key_groups: Range<u32>,
        to: Vec<Option<u32>>,
    ) -> NativePart {
        let files = snapshot.native().unwrap().expect("native files");
        let dir = backends.new_database_dir().unwrap();
        for file in &files.files {
            std::fs::copy(files.dir.join(&file.name), dir.join(&file.name)).unwrap();
        }
        let shared_names = files.files.iter().filter_map(|f| Some((f.name.clone(), f.shared_name.clone()?))).collect();
        let kinds = files.states.iter().map(|s| s.kind).collect();
        NativePart { dir, key_groups, kinds, to, shared_names }
    }

    #[test]
    fn native_snapshots_restore_at_another_parallelism_and_with_states_renumbered() {
        let dir = tempfile::tempdir().unwrap();
        let backends = RocksDbBackends::new(dir.path(), "job", 16 << 20).unwrap();
        let kinds = [StateKind::Value, StateKind::List];
        let states =
            [StateDescriptor::new("count", StateKind::Value, 1), StateDescriptor::new("seen", StateKind::List, 1)];
        let mut memory = crate::state::MemoryBackend::new(0..8, &kinds);
        let (mut a, mut b) = (backends.open(0..4, &kinds).unwrap(), backends.open(4..8, &kinds).unwrap());
        for kg in 0..8u16 {
            let db = if kg < 4 { &mut a } else { &mut b };
            for target in [db as &mut dyn StateBackend, &mut memory] {
                target.value_put(0, kg, b"k", &[kg as u8]).unwrap();
                target.list_append(1, kg, b"k", b"x").unwrap();
                target.list_append(1, kg, b"k", &[kg as u8]).unwrap();
            }
        }
        let (mut snap_a, mut snap_b) = (a.snapshot(0..4, &states).unwrap(), b.snapshot(4..8, &states).unwrap());
        let entries = |backend: &dyn StateBackend, range: Range<u32>| {
            let mut out = Vec::new();
            backend.scan(range, &mut |e| out.push(format!("{e:?}"))).unwrap();
            out
        };
        // Key groups 2..6: half of each, the first opened in place and clipped, the other copied.
        let parts = vec![
            fetched(&backends, &mut *snap_a, 0..4, vec![Some(0), Some(1)]),
            fetched(&backends, &mut *snap_b, 4..8, vec![Some(0), Some(1)]),
        ];
        let restored = backends.restore(parts, 2..6, &kinds).unwrap();
        assert_eq!(entries(&restored, 0..8), entries(&memory, 2..6));
        assert!(!restored.shared_names.is_empty(), "the files opened in place keep their shared names");
        // The same states declared the other way round: every entry copied, renumbered.
        let swapped = [StateKind::List, StateKind::Value];
        let parts = vec![fetched(&backends, &mut *snap_b, 4..8, vec![Some(1), Some(0)])];
        let restored = backends.restore(parts, 4..8, &swapped).unwrap();
        let mut values = Vec::new();
        restored.value_get(1, 5, b"k", &mut values).unwrap();
        let mut list = Vec::new();
        restored.list_get(0, 5, b"k", &mut |e| list.push(e.to_vec())).unwrap();
        assert_eq!((values, list), (vec![5], vec![b"x".to_vec(), vec![5]]));
    }

    #[test]
    fn databases_of_processes_that_are_gone_are_deleted_when_a_job_starts() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("other-job/db-4000000000-0");
        let checkpoint = dir.path().join("other-job/db-4000000000-0.chk-3");
        let own = dir.path().join(format!("other-job/db-{}-7", std::process::id()));
        let not_a_database = dir.path().join("other-job/notes");
        for path in [&gone, &checkpoint, &own, &not_a_database] {
            std::fs::create_dir_all(path).unwrap();
        }
        RocksDbBackends::new(dir.path(), "job", 16 << 20).unwrap();
        assert!(!gone.exists() && !checkpoint.exists(), "a dead process's database and checkpoint are deleted");
        assert!(own.exists() && not_a_database.exists(), "a live process's database and other files stay");
    }
}
