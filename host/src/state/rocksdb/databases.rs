//! [`RocksDbBackends`]: the databases of one job's operator subtasks, where they go on disk, the
//! memory they share and the options they are opened with.
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, DB, DBCompressionType, Options, WriteBufferManager, WriteOptions,
};

use super::records::record_options;
use super::values::ValueCache;
use super::{Live, Removed, RocksDbBackend, files};
use crate::state::{NativePart, StateKind};

/// The databases of one job's operator subtasks, and the memory they share.
pub struct RocksDbBackends {
    /// Where each subtask's database goes (a directory of the job's own).
    dir: PathBuf,
    cache: Cache,
    write_buffers: WriteBufferManager,
    /// Bytes of each database's value cache ([`ValueCache`]).
    value_cache: usize,
}

/// Numbers the databases this process opens, so that no two share a directory: not per job run,
/// since a run after an upgrade opens its databases beside those handed over to it.
static OPENED: AtomicU64 = AtomicU64::new(0);

impl RocksDbBackends {
    /// The databases of job `job_id`, in its directory under `local_dir`, sharing
    /// `managed_memory` bytes: a block cache of that size, whose budget includes the write buffers
    /// (memtables), as Flink's managed memory does. Databases under `local_dir` of processes that
    /// are gone (killed before they could delete them) are deleted first.
    pub fn new(local_dir: &Path, job_id: &str, managed_memory: usize) -> Result<Self, String> {
        let dir = local_dir.join(job_id);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        collect_orphans(local_dir);
        let cache = Cache::new_lru_cache(managed_memory);
        // Write buffers charge their memory to the cache, and stall writers beyond it.
        let write_buffers =
            WriteBufferManager::new_write_buffer_manager_with_cache(managed_memory / 2, true, cache.clone());
        // Each subtask's value cache: a sixteenth of the managed memory, from 1 to 64 MiB.
        let value_cache = (managed_memory / 16).clamp(1 << 20, 64 << 20);
        Ok(RocksDbBackends { dir, cache, write_buffers, value_cache })
    }

    /// A new, empty database for `key_groups` of states `kinds`.
    pub fn open(&self, key_groups: Range<u32>, kinds: &[StateKind]) -> Result<RocksDbBackend, String> {
        self.open_at(self.new_database_dir()?, key_groups, kinds, HashMap::new())
    }

    /// A new, empty directory for one database of this job, named so that no other database
    /// (of this process or another) has it: where a restore fetches native files to.
    pub fn new_database_dir(&self) -> Result<PathBuf, String> {
        let n = OPENED.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("db-{}-{n}", std::process::id()));
        // A directory left by an earlier process of the same id is stale: nothing reads it.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(path)
    }

    /// The database in `path` (empty, or fetched from a native snapshot whose files have the
    /// shared names `shared_names`); it is deleted with the backend.
    fn open_at(
        &self,
        path: PathBuf,
        key_groups: Range<u32>,
        kinds: &[StateKind],
        shared_names: HashMap<String, String>,
    ) -> Result<RocksDbBackend, String> {
        let dir = Removed(path);
        let db = DB::open(&self.options(), &dir.0)
            .map_err(|e| format!("cannot open RocksDB at {}: {e}", dir.0.display()))?;
        // No write-ahead log: a crashed run's database is never read again (a restore reads a
        // checkpoint), and a checkpoint flushes the memtables before it links the files.
        let mut writes = WriteOptions::default();
        writes.disable_wal(true);
        let values = Mutex::new(ValueCache::new(self.value_cache));
        Ok(RocksDbBackend {
            live: Arc::new(Live { db, dir, writes, values, writer: Mutex::new(()) }),
            key_groups,
            kinds: kinds.to_vec(),
            checkpoints: AtomicU64::new(0),
            unique: unique_name(),
            shared_names,
            read_only: self.read_only_options(),
        })
    }

    /// A backend for `key_groups` of states `kinds` from native snapshots: the first is opened
    /// in place when its states are the declared ones in the same order, and clipped to
    /// `key_groups` with range deletions; every other one (and the first otherwise) is opened
    /// read-only and its entries in `key_groups` copied in. Their directories are taken over.
    pub fn restore(
        &self,
        parts: Vec<NativePart>,
        key_groups: Range<u32>,
        kinds: &[StateKind],
    ) -> Result<RocksDbBackend, String> {
        let mut parts = parts.into_iter();
        let mut backend = match parts.next() {
            Some(base) if files::keeps_indices(&base, kinds) => {
                let backend = self.open_at(base.dir, key_groups.clone(), kinds, base.shared_names)?;
                backend.clip().map_err(|e| e.to_string())?;
                backend
            }
            Some(part) => {
                let mut backend = self.open(key_groups.clone(), kinds)?;
                backend.copy_from(part)?;
                backend
            }
            None => self.open(key_groups.clone(), kinds)?,
        };
        for part in parts {
            backend.copy_from(part)?;
        }
        Ok(backend)
    }

    /// Options to read a checkpoint or a fetched snapshot with: the job's block cache.
    fn read_only_options(&self) -> Options {
        let mut options = record_options();
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        options.set_block_based_table_factory(&table);
        options
    }

    fn options(&self) -> Options {
        let mut options = record_options();
        options.create_if_missing(true);
        options.set_compression_type(DBCompressionType::Lz4);
        options.set_write_buffer_manager(&self.write_buffers);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        table.set_bloom_filter(10.0, false);
        // Index and filter blocks live in the block cache, inside the budget, partitioned so that
        // a lookup loads a 4 KiB partition, not a file's whole filter: with whole filters, a job
        // of millions of new keys (every lookup a miss) spent most of its time re-reading and
        // checksumming filters the memtables had pushed out of the cache. The top level of each
        // and L0's stay pinned.
        table.set_cache_index_and_filter_blocks(true);
        table.set_partition_filters(true);
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        options.set_block_based_table_factory(&table);
        // One subtask's database: a few files open, little background work.
        options.set_max_open_files(256);
        options.set_max_background_jobs(1);
        options
    }
}

/// Deletes the databases (and their checkpoints) in the job directories under `local_dir` whose
/// process is gone: `db-<pid>-<n>` names the process that opened it.
fn collect_orphans(local_dir: &Path) {
    let Ok(jobs) = std::fs::read_dir(local_dir) else { return };
    for entry in jobs.flatten().flat_map(|job| std::fs::read_dir(job.path()).into_iter().flatten().flatten()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("db-").and_then(|rest| rest.split('-').next()) else { continue };
        let gone = pid
            .parse::<u32>()
            .is_ok_and(|pid| pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists());
        if gone {
            tracing::info!("deleting {}, left by a weir process that is gone", entry.path().display());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A name no other database has: from the process, the time and a sequence number.
fn unique_name() -> String {
    use sha2::Digest;
    let n = OPENED.load(Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    hex::encode(&sha2::Sha256::digest(format!("{}/{nanos}/{n}", std::process::id()))[..8])
}
