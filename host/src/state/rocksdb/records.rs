//! How a [`RocksDbBackend`](super::RocksDbBackend) lays out its records, key group first so that a
//! range of key groups is one contiguous range of keys (scanned for snapshots, deleted with one
//! range tombstone when key groups move):
//! ```text
//! u16 key group (big-endian) | u32 state | u32 key length | key            value state: the value
//! u16 key group (big-endian) | u32 state | u32 key length | key | map key  map state: one record per entry
//! u16 key group (big-endian) | u32 state | u32 key length | key            list state: the elements, each
//!                                                                          u32-length-prefixed, appended
//!                                                                          by a merge operator
//! ```
use std::ops::Range;

use rocksdb::{DB, Direction, IteratorMode, MergeOperands, Options, ReadOptions};

use super::db_error;
use crate::key_group::KeyGroup;
use crate::state::{StateEntry, StateError, StateItem, StateKind};

/// `kg | state | key length | key`: the record of a value or list, the prefix of a map's.
pub(super) fn record_key(kg: KeyGroup, state: u32, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + key.len());
    out.extend_from_slice(&kg.to_be_bytes());
    out.extend_from_slice(&state.to_be_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// `kg | state | key length | key | map key`: one entry of a map.
pub(super) fn map_record(kg: KeyGroup, state: u32, key: &[u8], map_key: &[u8]) -> Vec<u8> {
    let mut record = record_key(kg, state, key);
    record.extend_from_slice(map_key);
    record
}

/// One list element as the merge operator appends it: its length (u32, little-endian), then it.
pub(super) fn list_element(value: &[u8]) -> Vec<u8> {
    let mut element = Vec::with_capacity(4 + value.len());
    element.extend_from_slice(&(value.len() as u32).to_le_bytes());
    element.extend_from_slice(value);
    element
}

/// The first key after every key that starts with `prefix`.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

/// The first key of key group `kg` (or, for `kg` past the last, the end of them all).
pub(super) fn key_group_start(kg: u32) -> Vec<u8> {
    match u16::try_from(kg) {
        Ok(kg) => kg.to_be_bytes().to_vec(),
        Err(_) => vec![u8::MAX; 3],
    }
}

/// Options every opening of a database needs to read its records: the list merge operator.
pub(super) fn record_options() -> Options {
    let mut options = Options::default();
    options.set_merge_operator_associative("weir-list-append", append);
    options
}

/// The list merge operator: elements append.
fn append(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut list = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for operand in operands {
        list.extend_from_slice(operand);
    }
    Some(list)
}

/// The elements of a stored list; `None` for a torn one.
pub(super) struct ListElements<'a>(pub(super) &'a [u8]);

impl<'a> Iterator for ListElements<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let Some((length, rest)) = self.0.split_first_chunk::<4>() else {
            self.0 = &[];
            return Some(None);
        };
        match rest.split_at_checked(u32::from_le_bytes(*length) as usize) {
            Some((element, rest)) => {
                self.0 = rest;
                Some(Some(element))
            }
            None => {
                self.0 = &[];
                Some(None)
            }
        }
    }
}

/// Visits every entry of `db` in `key_groups`, reading records as [`RocksDbBackend`] lays them out
/// for states `kinds`: of every state, one range of records; of state `only`, the range of each
/// key group's records of it.
///
/// [`RocksDbBackend`]: super::RocksDbBackend
pub(super) fn scan_db(
    db: &DB,
    kinds: &[StateKind],
    key_groups: Range<u32>,
    only: Option<u32>,
    visit: &mut dyn FnMut(StateEntry<'_>),
) -> Result<(), StateError> {
    let ranges: Vec<(Vec<u8>, Vec<u8>)> = match only {
        None => vec![(key_group_start(key_groups.start), key_group_start(key_groups.end))],
        Some(state) => (key_groups.start..key_groups.end.min(1 << 16))
            .map(|kg| {
                let mut prefix = key_group_start(kg);
                prefix.extend_from_slice(&state.to_be_bytes());
                let end = prefix_end(&prefix);
                (prefix, end)
            })
            .collect(),
    };
    for (start, end) in ranges {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(end);
        for item in db.iterator_opt(IteratorMode::From(&start, Direction::Forward), options) {
            let (record, value) = item.map_err(db_error)?;
            visit_record(&record, &value, kinds, visit)?;
        }
    }
    Ok(())
}

/// Visits the entries of one record.
fn visit_record(
    record: &[u8],
    value: &[u8],
    kinds: &[StateKind],
    visit: &mut dyn FnMut(StateEntry<'_>),
) -> Result<(), StateError> {
    let corrupt = || StateError::Storage { cause: format!("a record of {} bytes is not weir's", record.len()) };
    let (kg, rest) = record.split_first_chunk::<2>().ok_or_else(corrupt)?;
    let (state, rest) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let (length, rest) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let (kg, state, length) = (u16::from_be_bytes(*kg), u32::from_be_bytes(*state), u32::from_be_bytes(*length));
    let (key, map_key) = rest.split_at_checked(length as usize).ok_or_else(corrupt)?;
    let entry = |item| StateEntry { key_group: kg, state, key, item };
    match kinds.get(state as usize) {
        Some(StateKind::Value) => visit(entry(StateItem::Value(value))),
        Some(StateKind::Map | StateKind::Broadcast) => visit(entry(StateItem::MapEntry(map_key, value))),
        Some(StateKind::List) => {
            for element in ListElements(value) {
                visit(entry(StateItem::ListElement(element.ok_or_else(corrupt)?)));
            }
        }
        None => return Err(StateError::UnknownState { state }),
    }
    Ok(())
}
