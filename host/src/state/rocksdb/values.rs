//! [`ValueCache`]: value state in memory in front of RocksDB, written back in one `WriteBatch`.
//!
//! A keyed count reads and writes the same keys again and again; through RocksDB each read is a
//! lookup in the memtable and the block cache, and each write an insert into the memtable's
//! skip list (where a RocksDB job spent about half its time). Here a batch's keys are read with
//! one multi-get (the batch frame names them all before the guest runs), kept, and written back
//! only when the cache outgrows its budget or a checkpoint, scan or range deletion needs the
//! database to hold everything: one sorted `WriteBatch` of each key's last value instead of a
//! memtable insert per event.
use std::collections::HashMap;

use rocksdb::{DB, WriteBatch, WriteOptions};

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

/// Value-state records (their RocksDB keys) and their values, within a byte budget.
pub(super) struct ValueCache {
    entries: HashMap<Vec<u8>, Cached, foldhash::fast::RandomState>,
    /// What the entries take, about.
    bytes: usize,
    budget: usize,
    /// Records asked to be loaded before the next read ([`ValueCache::want`]).
    wanted: Vec<Vec<u8>>,
}

fn db_error(e: rocksdb::Error) -> StateError {
    StateError::Storage { cause: e.into_string() }
}

impl ValueCache {
    /// An empty cache of at most `budget` bytes.
    pub(super) fn new(budget: usize) -> Self {
        ValueCache { entries: HashMap::default(), bytes: 0, budget, wanted: Vec::new() }
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
        let value = db.get(record).map_err(db_error)?;
        let found = value.as_ref().map(|v| out.extend_from_slice(v)).is_some();
        self.insert(record.to_vec(), Cached::Clean(value));
        Ok(found)
    }

    fn load_wanted(&mut self, db: &DB) -> Result<(), StateError> {
        let mut wanted = std::mem::take(&mut self.wanted);
        wanted.sort_unstable();
        wanted.dedup();
        let values = db.multi_get(&wanted);
        for (record, value) in wanted.into_iter().zip(values) {
            let value = value.map_err(db_error)?;
            self.entries.entry(record).or_insert_with_key(|record| {
                self.bytes += record.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD;
                Cached::Clean(value)
            });
        }
        Ok(())
    }

    /// Sets `record`'s value (`None`: clears it); writes back once over budget.
    pub(super) fn put(
        &mut self,
        db: &DB,
        writes: &WriteOptions,
        record: Vec<u8>,
        value: Option<&[u8]>,
    ) -> Result<(), StateError> {
        self.insert(record, Cached::Dirty(value.map(<[u8]>::to_vec)));
        if self.bytes > self.budget { self.write_back(db, writes) } else { Ok(()) }
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
    /// batch, and empties the cache.
    pub(super) fn write_back(&mut self, db: &DB, writes: &WriteOptions) -> Result<(), StateError> {
        let mut dirty: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .entries
            .drain()
            .filter_map(|(record, cached)| match cached {
                Cached::Dirty(value) => Some((record, value)),
                Cached::Clean(_) => None,
            })
            .collect();
        self.bytes = 0;
        self.wanted.clear();
        if dirty.is_empty() {
            return Ok(());
        }
        dirty.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut batch = WriteBatch::default();
        for (record, value) in dirty {
            match value {
                Some(value) => batch.put(record, value),
                None => batch.delete(record),
            }
        }
        db.write_opt(batch, writes).map_err(db_error)
    }
}
