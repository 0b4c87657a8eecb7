//! [`ValueCache`]: value state in memory in front of RocksDB, written back in one `WriteBatch`.
//!
//! A keyed count reads and writes the same keys again and again; through RocksDB each read is a
//! lookup in the memtable and the block cache, and each write an insert into the memtable's
//! skip list (where a RocksDB job spent about half its time). Here a batch's keys are read with
//! one multi-get (the batch frame names them all before the guest runs), kept, and written back
//! only when the cache outgrows its budget or a scan or range deletion needs the database to hold
//! everything: one sorted `WriteBatch` of each key's last value instead of a memtable insert per
//! event.
//!
//! At a barrier the cache's entries are *frozen* ([`ValueCache::freeze`]): set aside as they are,
//! still read from, while new writes go on in an empty cache. Writing them to
//! the database and taking the RocksDB checkpoint (a memtable flush) is then the asynchronous
//! part of the checkpoint, done on the uploader thread (see `Live::settle`), so the barrier's
//! synchronous part costs no more than moving a map.
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use rocksdb::{DB, WriteBatch, WriteOptions};

use super::PendingCheckpoint;
use crate::state::StateError;

/// Bytes an entry costs beyond its key and value (the map's slot, the vectors' headers).
const ENTRY_OVERHEAD: usize = 80;

/// A value as the cache holds it.
enum Cached {
    /// As the database holds it (`None`: no value).
    Clean(Option<Vec<u8>>),
    /// Written since the last write-back (`None`: cleared).
    Dirty(Option<Vec<u8>>),
}

impl Cached {
    fn value(&self) -> Option<&[u8]> {
        match self {
            Cached::Clean(v) | Cached::Dirty(v) => v.as_deref(),
        }
    }

    fn bytes(&self) -> usize {
        self.value().map_or(0, <[u8]>::len)
    }
}

/// The cache's entries at a barrier: its values written since the last write-back on their way
/// to the database and its checkpoint, and the clean ones it read.
type Entries = HashMap<Vec<u8>, Cached, foldhash::fast::RandomState>;

/// The values frozen at a barrier and the checkpoint to take once they are in the database
/// (none to take once nobody waits for it).
pub(super) struct Frozen {
    values: Arc<Entries>,
    pub(super) checkpoint: Weak<PendingCheckpoint>,
}

impl Frozen {
    /// Writes its values written since the write-back before to `db`.
    pub(super) fn write(&self, db: &DB, writes: &WriteOptions) -> Result<(), StateError> {
        write_dirty(db, writes, &self.values)
    }
}

/// Value-state records (their RocksDB keys) and their values, within a byte budget.
pub(super) struct ValueCache {
    entries: Entries,
    /// What the entries take, about.
    bytes: usize,
    budget: usize,
    /// Records asked to be loaded before the next read ([`ValueCache::want`]).
    wanted: Vec<Vec<u8>>,
    /// The values of the latest barrier, until they are in the database.
    frozen: Option<Frozen>,
}

fn db_error(e: rocksdb::Error) -> StateError {
    StateError::Storage { cause: e.into_string() }
}

/// Writes the values of `entries` written since the last write-back to `db`, in one sorted
/// batch.
fn write_dirty(db: &DB, writes: &WriteOptions, entries: &Entries) -> Result<(), StateError> {
    let mut values: Vec<_> = entries
        .iter()
        .filter_map(|(record, cached)| match cached {
            Cached::Dirty(value) => Some((record, value)),
            Cached::Clean(_) => None,
        })
        .collect();
    if values.is_empty() {
        return Ok(());
    }
    values.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut batch = WriteBatch::default();
    for (record, value) in values {
        match value {
            Some(value) => batch.put(record, value),
            None => batch.delete(record),
        }
    }
    db.write_opt(batch, writes).map_err(db_error)
}

impl ValueCache {
    /// An empty cache of at most `budget` bytes.
    pub(super) fn new(budget: usize) -> Self {
        ValueCache { entries: HashMap::default(), bytes: 0, budget, wanted: Vec::new(), frozen: None }
    }

    /// Notes that `record` is read soon: the next [`ValueCache::get`] loads every noted record
    /// not held yet with one multi-get.
    pub(super) fn want(&mut self, record: Vec<u8>) {
        if !self.entries.contains_key(&record) {
            self.wanted.push(record);
        }
    }

    /// Appends `record`'s value to `out`; false when it has none.
    pub(super) fn get(&mut self, db: &DB, record: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        if !self.wanted.is_empty() {
            self.load_wanted(db)?;
        }
        if let Some(cached) = self.entries.get(record) {
            return Ok(cached.value().map(|v| out.extend_from_slice(v)).is_some());
        }
        let value = match self.frozen.as_ref().and_then(|f| f.values.get(record)) {
            Some(frozen) => frozen.value().map(<[u8]>::to_vec),
            None => db.get(record).map_err(db_error)?,
        };
        let found = value.as_ref().map(|v| out.extend_from_slice(v)).is_some();
        self.insert(record.to_vec(), Cached::Clean(value));
        Ok(found)
    }

    fn load_wanted(&mut self, db: &DB) -> Result<(), StateError> {
        let mut wanted = std::mem::take(&mut self.wanted);
        let frozen = self.frozen.as_ref().map(|f| &f.values);
        wanted.retain(|record| !self.entries.contains_key(record) && !frozen.is_some_and(|f| f.contains_key(record)));
        wanted.sort_unstable();
        wanted.dedup();
        let values = db.multi_get(&wanted);
        for (record, value) in wanted.into_iter().zip(values) {
            let value = value.map_err(db_error)?;
            self.bytes += record.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD;
            self.entries.insert(record, Cached::Clean(value));
        }
        Ok(())
    }

    /// Sets `record`'s value (`None`: clears it); true once the cache is over its budget and
    /// should be written back.
    pub(super) fn put(&mut self, record: Vec<u8>, value: Option<&[u8]>) -> bool {
        self.insert(record, Cached::Dirty(value.map(<[u8]>::to_vec)));
        self.bytes > self.budget
    }

    fn insert(&mut self, record: Vec<u8>, cached: Cached) {
        let added = cached.bytes();
        match self.entries.get_mut(&record) {
            Some(old) => {
                self.bytes = self.bytes + added - old.bytes();
                *old = cached;
            }
            None => {
                self.bytes += record.len() + added + ENTRY_OVERHEAD;
                self.entries.insert(record, cached);
            }
        }
    }

    /// Writes every value written since the last write-back to the database, in one sorted
    /// batch, and empties the cache. Only with nothing frozen: the frozen values go first.
    pub(super) fn write_back(&mut self, db: &DB, writes: &WriteOptions) -> Result<(), StateError> {
        debug_assert!(self.frozen.is_none(), "frozen values are written first");
        let written = write_dirty(db, writes, &self.entries);
        self.entries.clear();
        self.bytes = 0;
        self.wanted.clear();
        written
    }

    /// Sets the cache's entries aside for checkpoint `checkpoint` (see the module's doc) and
    /// starts an empty one: the values written since the last write-back go to the database from
    /// there, and they stay readable until [`ValueCache::thaw`]. Only with nothing frozen
    /// already.
    pub(super) fn freeze(&mut self, checkpoint: Weak<PendingCheckpoint>) {
        debug_assert!(self.frozen.is_none(), "one barrier's values at a time");
        let values = Arc::new(std::mem::take(&mut self.entries));
        self.bytes = 0;
        self.frozen = Some(Frozen { values, checkpoint });
    }

    /// The frozen values and their checkpoint, if any.
    pub(super) fn frozen(&self) -> Option<Frozen> {
        self.frozen.as_ref().map(|f| Frozen { values: f.values.clone(), checkpoint: f.checkpoint.clone() })
    }

    /// The frozen values are in the database: reads go there.
    pub(super) fn thaw(&mut self) {
        self.frozen = None;
    }
}
