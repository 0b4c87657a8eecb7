//! Keyed state storage: the [`StateBackend`] trait, its in-memory implementation, the snapshots
//! backends make at barriers ([`SnapshotBody`]) and the canonical snapshot format
//! ([`canonical`]) every backend's state can be written in and read back from.
//!
//! A backend stores bytes for one operator subtask, addressed by (key group, state index, key)
//! and, for map state, a map key. Key groups come first in that address so that a contiguous range
//! of them can be scanned (snapshots), dropped or moved (rescaling) without touching the rest; a
//! RocksDB backend lays its keys out the same way (`kg | state | key | map-key`).
//!
//! Layering: knows nothing of wasm, channels or HTTP. The wasm host checks *who* may touch which
//! key; the backend only stores.
use std::ops::Range;

/// The [`StateBackend::snapshot`] and [`StateBackend::freeze`] of a backend that keeps its state
/// in memory: a copy in the canonical form, and a freeze under an overlay.
macro_rules! in_memory_snapshots {
    () => {
        fn snapshot(
            &self,
            key_groups: std::ops::Range<u32>,
            states: &[$crate::state::StateDescriptor],
        ) -> Result<Box<dyn $crate::state::SnapshotBody>, $crate::state::StateError> {
            $crate::state::canonical::copy(self, key_groups, states)
        }

        fn freeze(
            self: Box<Self>,
            key_groups: std::ops::Range<u32>,
            states: &[$crate::state::StateDescriptor],
        ) -> (Box<dyn $crate::state::SnapshotBody>, Box<dyn StateBackend>) {
            $crate::state::overlay::freeze(self, key_groups, states)
        }
    };
}
use in_memory_snapshots;

pub mod broadcast;
pub mod canonical;
#[cfg(test)]
pub(crate) mod conformance;
mod key_map;
mod memory;
mod migration;
pub mod overlay;
mod rocksdb;
mod snapshot;
mod timers;
pub mod ttl;
mod value_table;

pub use memory::MemoryBackend;
pub use migration::{Migration, RestoredState, StateRestore, migrations_needed, rewrite_items};
pub use rocksdb::{RocksDbBackend, RocksDbBackends};
pub use snapshot::{NativeFile, NativeFiles, NativePart, SnapshotBody};
pub use timers::{
    SPILL_AFTER, TIMERS_STATE, Timer, TimerQueue, domain_name, map_key as timer_map_key,
    parse_map_key as parse_timer_map_key, timer_of, timers_descriptor,
};
pub(crate) use value_table::same_bytes;

use crate::key_group::KeyGroup;

/// The shape of a declared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateKind {
    /// One value per key.
    Value,
    /// A map of map keys to values per key.
    Map,
    /// A list of values per key.
    List,
    /// A map of map keys to values that is not keyed: the same in every subtask, held beside the
    /// keyed backend (see [`broadcast`]); a backend keeps nothing of it.
    Broadcast,
}

/// A state an operator declares: what its entries mean, as recorded in snapshots and savepoints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StateDescriptor {
    /// Its name: state is matched by it on restore.
    pub name: String,
    /// Value, map or list.
    pub kind: StateKind,
    /// The layout version of its stored bytes.
    pub schema_version: u32,
    /// The older layout versions the code declaring it can migrate from (see [`RestoredState`]);
    /// empty in what snapshots record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrates_from: Vec<u32>,
    /// Milliseconds of processing time after its last write that an entry expires (state TTL):
    /// its stored bytes then start with the 8-byte expiry (see [`ttl`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_live: Option<u64>,
}

impl StateDescriptor {
    /// A state no older layout migrates to.
    pub fn new(name: &str, kind: StateKind, schema_version: u32) -> Self {
        StateDescriptor { name: name.to_string(), kind, schema_version, migrates_from: Vec::new(), time_to_live: None }
    }

    /// Whether `a` and `b` are the same states in the same order, schema versions aside: a
    /// backend holding states `a` serves code declaring `b` once the states whose versions differ
    /// are migrated.
    pub fn same_states(a: &[StateDescriptor], b: &[StateDescriptor]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.name == b.name && a.kind == b.kind)
    }
}

/// Errors of a state backend.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state index is not one the backend was created with, or has another kind.
    #[error("state #{state} is not a declared {expected:?} state")]
    WrongState {
        /// The index used.
        state: u32,
        /// The kind the call needs.
        expected: StateKind,
    },
    /// No state has this index.
    #[error("state #{state} is not declared")]
    UnknownState {
        /// The index used.
        state: u32,
    },
    /// The store under the backend failed (RocksDB: a disk error, a full disk, a torn file).
    #[error("the state store failed: {cause}")]
    Storage {
        /// What it said.
        cause: String,
    },
    /// The key group is outside the range this backend holds.
    #[error("key group {key_group} is outside this subtask's key groups {range:?}")]
    KeyGroupNotOwned {
        /// The key group used.
        key_group: KeyGroup,
        /// The range held.
        range: Range<u32>,
    },
}

/// One stored item, as produced by [`StateBackend::scan`] and accepted by
/// [`StateBackend::insert`]: the portable unit of snapshots and rescaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateEntry<'a> {
    /// The key group of `key`.
    pub key_group: KeyGroup,
    /// The state's index in the operator's declaration.
    pub state: u32,
    /// The event key.
    pub key: &'a [u8],
    /// What is stored.
    pub item: StateItem<'a>,
}

/// The stored item of a [`StateEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateItem<'a> {
    /// A value state's value.
    Value(&'a [u8]),
    /// One entry of a map state.
    MapEntry(&'a [u8], &'a [u8]),
    /// One element of a list state, in list order.
    ListElement(&'a [u8]),
}

/// Storage of one operator subtask's keyed state.
///
/// Reads append to a caller-owned buffer or call a visitor, so that the hot path allocates nothing
/// and a disk-backed implementation can hand out bytes it does not keep.
pub trait StateBackend: Send + Sync {
    /// Appends the value of value state `state` for `key` to `out`; false when there is none.
    fn value_get(&self, state: u32, kg: KeyGroup, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError>;
    /// Sets the value.
    fn value_put(&mut self, state: u32, kg: KeyGroup, key: &[u8], value: &[u8]) -> Result<(), StateError>;
    /// A hint that `key`'s value is read or written soon: a backend that can start loading it
    /// early does, so that the lookups of a whole batch overlap their memory latency.
    fn value_prefetch(&self, _state: u32, _kg: KeyGroup, _key: &[u8]) {}

    /// Appends the value under `map_key` to `out`; false when there is none.
    fn map_get(
        &self,
        state: u32,
        kg: KeyGroup,
        key: &[u8],
        map_key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateError>;
    /// Stores `value` under `map_key`.
    fn map_put(&mut self, state: u32, kg: KeyGroup, key: &[u8], map_key: &[u8], value: &[u8])
    -> Result<(), StateError>;
    /// Removes `map_key`.
    fn map_remove(&mut self, state: u32, kg: KeyGroup, key: &[u8], map_key: &[u8]) -> Result<(), StateError>;
    /// Calls `visit` with every entry of the map, ordered by map key bytes.
    fn map_entries(
        &self,
        state: u32,
        kg: KeyGroup,
        key: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError>;

    /// Calls `visit` with every element of the list, oldest first.
    fn list_get(&self, state: u32, kg: KeyGroup, key: &[u8], visit: &mut dyn FnMut(&[u8])) -> Result<(), StateError>;
    /// Appends an element.
    fn list_append(&mut self, state: u32, kg: KeyGroup, key: &[u8], value: &[u8]) -> Result<(), StateError>;

    /// Removes whatever state `state` holds for `key` (value, map or list).
    fn clear(&mut self, state: u32, kg: KeyGroup, key: &[u8]) -> Result<(), StateError>;

    /// Calls `visit` with every entry in `key_groups`, key group by key group, of every state
    /// (`only` is `None`) or of state `only` without reading the others.
    fn scan_where(
        &self,
        key_groups: Range<u32>,
        only: Option<u32>,
        visit: &mut dyn FnMut(StateEntry<'_>),
    ) -> Result<(), StateError>;
    /// Every entry in `key_groups`, key group by key group.
    fn scan(&self, key_groups: Range<u32>, visit: &mut dyn FnMut(StateEntry<'_>)) -> Result<(), StateError> {
        self.scan_where(key_groups, None, visit)
    }
    /// The entries of state `state` in `key_groups`: a subtask's timers are found so when it
    /// starts, in microseconds however many keys its other states hold.
    fn scan_state(
        &self,
        state: u32,
        key_groups: Range<u32>,
        visit: &mut dyn FnMut(StateEntry<'_>),
    ) -> Result<(), StateError> {
        self.scan_where(key_groups, Some(state), visit)
    }
    /// Adds one scanned entry (restore, or the receiving side of a move).
    fn insert(&mut self, entry: StateEntry<'_>) -> Result<(), StateError> {
        let StateEntry { key_group, state, key, item } = entry;
        match item {
            StateItem::Value(v) => self.value_put(state, key_group, key, v),
            StateItem::MapEntry(mk, v) => self.map_put(state, key_group, key, mk, v),
            StateItem::ListElement(v) => self.list_append(state, key_group, key, v),
        }
    }
    /// Drops every entry in `key_groups` (the sending side of a move).
    fn drop_key_groups(&mut self, key_groups: Range<u32>) -> Result<(), StateError>;
    /// Moves its key groups from `at` on into a backend of their own, which it returns, without
    /// copying entries (a canary's step hands each part of a subtask's key groups over apart);
    /// `None`, changing nothing, for a backend that cannot.
    fn split_off(&mut self, _at: u32) -> Option<Box<dyn StateBackend>> {
        None
    }
    /// Number of (state, key) pairs held.
    fn key_count(&self) -> usize;
    /// Bytes of memory its entries take, about, for a backend that keeps them in memory: what an
    /// operator's `state-limit` is checked against. `None` when it does not count them.
    fn approximate_bytes(&self) -> Option<usize> {
        None
    }

    /// Bytes of writes it holds apart from a frozen base it reads through (an overlay's delta),
    /// about; 0 for a backend that reads no other.
    fn bytes_apart(&self) -> usize {
        0
    }

    /// The synchronous part of a checkpoint: the snapshot of `key_groups`, which hold `states`,
    /// made so that processing can go on at once and the uploader store it meanwhile.
    fn snapshot(&self, key_groups: Range<u32>, states: &[StateDescriptor])
    -> Result<Box<dyn SnapshotBody>, StateError>;

    /// The same at the stop of an upgrade, where nothing but the next run follows: the backend
    /// is frozen for the snapshot instead of copied, and the backend returned (an overlay over
    /// the frozen one) goes on.
    fn freeze(
        self: Box<Self>,
        key_groups: Range<u32>,
        states: &[StateDescriptor],
    ) -> (Box<dyn SnapshotBody>, Box<dyn StateBackend>);

    /// The plain backend an [`overlay::OverlayBackend`] stands in for, once it can have it back
    /// (its snapshot stored); `None` meanwhile, and for every other backend.
    fn settled(&mut self) -> Result<Option<Box<dyn StateBackend>>, StateError> {
        Ok(None)
    }

    /// Whether a checkpoint's synchronous part should [`StateBackend::freeze`] it rather than
    /// take a [`StateBackend::snapshot`]: true where a copy would hold up processing (see
    /// [`checkpoint`]).
    fn freezes_at_checkpoint(&self) -> bool {
        false
    }
}

/// The synchronous part of a checkpoint of `backend`, which holds `key_groups` of `states`. A
/// memory backend is copied while that is quick (a few MiB: milliseconds) and frozen beyond,
/// like Flink's copy-on-write heap snapshots: the copy of 1,000,000 keys with a timer each takes
/// about 350 ms, the freeze microseconds, paid for by the overlay's slower writes until the
/// uploader has stored the frozen state.
pub fn checkpoint(
    backend: &mut Box<dyn StateBackend>,
    key_groups: Range<u32>,
    states: &[StateDescriptor],
) -> Result<Box<dyn SnapshotBody>, StateError> {
    settle(backend)?;
    if backend.freezes_at_checkpoint() {
        return Ok(freeze(backend, key_groups, states));
    }
    backend.snapshot(key_groups, states)
}

/// Replaces the overlay `backend` holds by the plain backend it stands in for, once it can
/// ([`StateBackend::settled`]); leaves any other as it is.
pub fn settle(backend: &mut Box<dyn StateBackend>) -> Result<(), StateError> {
    if let Some(settled) = backend.settled()? {
        *backend = settled;
    }
    Ok(())
}

/// [`StateBackend::freeze`] of the backend `backend` holds, which becomes what goes on after it.
pub fn freeze(
    backend: &mut Box<dyn StateBackend>,
    key_groups: Range<u32>,
    states: &[StateDescriptor],
) -> Box<dyn SnapshotBody> {
    let frozen = std::mem::replace(backend, Box::new(MemoryBackend::new(0..0, &[])));
    let (body, goes_on) = frozen.freeze(key_groups, states);
    *backend = goes_on;
    body
}

/// Forks the backend `backend` holds, which holds `key_groups` of states `kinds`, for a shadow
/// run ([`overlay::fork`]): what goes on after it takes its place, and the shadow's view is
/// returned.
pub fn fork(
    backend: &mut Box<dyn StateBackend>,
    key_groups: Range<u32>,
    kinds: &[StateKind],
) -> Result<Box<dyn StateBackend>, StateError> {
    settle(backend)?;
    let forked = std::mem::replace(backend, Box::new(MemoryBackend::new(0..0, &[])));
    let (goes_on, shadow) = overlay::fork(forked, key_groups, kinds);
    *backend = goes_on;
    Ok(shadow)
}

/// Where a job's operator subtasks keep their keyed state: its `[state] backend`.
#[derive(Clone, Default)]
pub enum Backends {
    /// In memory ([`MemoryBackend`]).
    #[default]
    Memory,
    /// In RocksDB databases on local disk, sharing the job's managed memory.
    RocksDb(std::sync::Arc<RocksDbBackends>),
}

impl Backends {
    /// A new, empty backend for `key_groups` of states `kinds`.
    pub fn open(&self, key_groups: Range<u32>, kinds: &[StateKind]) -> Result<Box<dyn StateBackend>, String> {
        Ok(match self {
            Backends::Memory => Box::new(MemoryBackend::new(key_groups, kinds)),
            Backends::RocksDb(databases) => Box::new(databases.open(key_groups, kinds)?),
        })
    }

    /// Whether it restores native snapshots of `format` ([`NativeFiles::format`]).
    pub fn reads_native(&self, format: &str) -> bool {
        matches!(self, Backends::RocksDb(_)) && format == rocksdb::FORMAT
    }

    /// A new directory to fetch a native snapshot's files into, for [`Backends::restore`].
    pub fn new_database_dir(&self) -> Result<std::path::PathBuf, String> {
        match self {
            Backends::Memory => Err(NATIVE_NEEDS_ROCKSDB.to_string()),
            Backends::RocksDb(databases) => databases.new_database_dir(),
        }
    }

    /// A backend for `key_groups` of states `kinds` from native snapshots' files, the first
    /// opened in place when it can be (see [`RocksDbBackends::restore`]).
    pub fn restore(
        &self,
        parts: Vec<NativePart>,
        key_groups: Range<u32>,
        kinds: &[StateKind],
    ) -> Result<Box<dyn StateBackend>, String> {
        match self {
            Backends::Memory => Err(NATIVE_NEEDS_ROCKSDB.to_string()),
            Backends::RocksDb(databases) => Ok(Box::new(databases.restore(parts, key_groups, kinds)?)),
        }
    }
}

/// Visits every entry of a native snapshot in format `format` whose files are in `dir`, holding
/// states `kinds` (what `weir savepoint inspect` reads of a native savepoint).
pub fn scan_native(
    format: &str,
    dir: &std::path::Path,
    kinds: &[StateKind],
    visit: &mut dyn FnMut(StateEntry<'_>),
) -> Result<(), String> {
    if format != rocksdb::FORMAT {
        return Err(format!("state in the native format \"{format}\" is not one this weir reads (it reads rocksdb)"));
    }
    rocksdb::scan_files(dir, kinds, visit).map_err(|e| e.to_string())
}

/// Why the memory backend refuses native snapshots.
pub const NATIVE_NEEDS_ROCKSDB: &str = "it holds state in RocksDB's native format, which only the rocksdb backend \
     restores: set [state] backend = \"rocksdb\", or start from a canonical savepoint";

/// Moves the entries of `key_groups` from one backend to another: how a rescale hands key groups
/// from one subtask to the next.
pub fn move_key_groups(
    from: &mut dyn StateBackend,
    to: &mut dyn StateBackend,
    key_groups: Range<u32>,
) -> Result<(), StateError> {
    let mut result = Ok(());
    from.scan(key_groups.clone(), &mut |entry| {
        if result.is_ok() {
            result = to.insert(entry);
        }
    })?;
    result?;
    from.drop_key_groups(key_groups)
}
