//! Keyed state storage: the [`StateBackend`] trait and its in-memory implementation.
//!
//! A backend stores bytes for one operator subtask, addressed by (key group, state index, key)
//! and, for map state, a map key. Key groups come first in that address so that a contiguous range
//! of them can be scanned (snapshots), dropped or moved (rescaling) without touching the rest; a
//! RocksDB backend lays its keys out the same way (`kg | state | key | map-key`).
//!
//! Layering: knows nothing of wasm, channels or HTTP. The wasm host checks *who* may touch which
//! key; the backend only stores.
use std::ops::Range;

#[cfg(test)]
pub(crate) mod conformance;
mod memory;
mod value_table;

pub use memory::MemoryBackend;
pub(crate) use value_table::same_bytes;

use crate::runtime::key_group::KeyGroup;

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
pub trait StateBackend: Send {
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

    /// Calls `visit` with every entry in `key_groups`, key group by key group.
    fn scan(&self, key_groups: Range<u32>, visit: &mut dyn FnMut(StateEntry<'_>)) -> Result<(), StateError>;
    /// Adds one scanned entry (restore, or the receiving side of a move).
    fn insert(&mut self, entry: StateEntry<'_>) -> Result<(), StateError>;
    /// Drops every entry in `key_groups` (the sending side of a move).
    fn drop_key_groups(&mut self, key_groups: Range<u32>) -> Result<(), StateError>;
    /// Number of (state, key) pairs held.
    fn key_count(&self) -> usize;
}

/// Gives an operator subtask the state it starts with. Called with the empty backend made for
/// it, the key groups it owns and its subtask index, it returns that backend filled with saved
/// entries (from a checkpoint or savepoint), or the backend the same subtask held before an
/// upgrade, handed over in place.
pub type StateRestore = std::sync::Arc<
    dyn Fn(Box<dyn StateBackend>, Range<u32>, u32) -> Result<Box<dyn StateBackend>, String> + Send + Sync,
>;

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
