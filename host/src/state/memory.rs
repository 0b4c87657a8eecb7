//! The in-memory backend: one hash table per (key group, state), so that a key group's entries
//! can be scanned or dropped without touching the others.
use std::collections::HashMap;
use std::ops::Range;

use super::key_map::KeyMap;
use super::value_table::ValueTable;
use super::{StateBackend, StateEntry, StateError, StateItem, StateKind};
use crate::key_group::KeyGroup;

type Bytes = Box<[u8]>;
type Map<V> = HashMap<Bytes, V, foldhash::fast::RandomState>;

enum Table {
    Value(ValueTable),
    Map(Map<KeyMap>),
    List(Map<Vec<Bytes>>),
}

impl Table {
    fn new(kind: StateKind) -> Self {
        match kind {
            StateKind::Value => Table::Value(ValueTable::new(Default::default())),
            StateKind::Map | StateKind::Broadcast => Table::Map(Map::default()),
            StateKind::List => Table::List(Map::default()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Table::Value(t) => t.len(),
            Table::Map(t) => t.len(),
            Table::List(t) => t.len(),
        }
    }
}

/// Keyed state of one subtask in hash tables on the heap.
pub struct MemoryBackend {
    key_groups: Range<u32>,
    kinds: Vec<StateKind>,
    /// `tables[kg - key_groups.start][state]`.
    tables: Vec<Vec<Table>>,
    /// Bytes held, about: keys, values and [`ENTRY_OVERHEAD`] per entry (see
    /// [`StateBackend::approximate_bytes`]).
    bytes: usize,
}

/// The most bytes a checkpoint copies (about 5 ms); a larger backend is frozen instead (see
/// [`super::checkpoint`]).
const COPIED_AT_MOST: usize = 8 << 20;

/// What one stored entry costs beyond its key and value bytes, about (record, table slot).
const ENTRY_OVERHEAD: usize = 32;

/// What an entry of `len` bytes of key and value costs, as [`MemoryBackend::bytes`] counts it.
fn entry_bytes(len: usize) -> usize {
    len + ENTRY_OVERHEAD
}

/// What key `key`'s map takes: the key once, and each entry.
fn map_bytes(key: &[u8], map: &KeyMap) -> usize {
    entry_bytes(key.len()) + map.iter().map(|(k, v)| entry_bytes(k.len() + v.len())).sum::<usize>()
}

/// What key `key`'s list takes: the key once, and each element.
fn list_bytes(key: &[u8], list: &[Bytes]) -> usize {
    entry_bytes(key.len()) + list.iter().map(|v| entry_bytes(v.len())).sum::<usize>()
}

impl MemoryBackend {
    /// An empty backend for the key groups `key_groups` and the declared states `kinds`.
    pub fn new(key_groups: Range<u32>, kinds: &[StateKind]) -> Self {
        let tables = key_groups.clone().map(|_| kinds.iter().map(|&k| Table::new(k)).collect()).collect();
        MemoryBackend { key_groups, kinds: kinds.to_vec(), tables, bytes: 0 }
    }

    /// The bytes [`MemoryBackend::bytes`] tracks, counted from the tables.
    fn count_bytes(&self) -> usize {
        let table = |t: &Table| -> usize {
            match t {
                Table::Value(t) => t.iter().map(|(k, v)| entry_bytes(k.len() + v.len())).sum(),
                Table::Map(t) => t.iter().map(|(k, m)| map_bytes(k, m)).sum(),
                Table::List(t) => t.iter().map(|(k, l)| list_bytes(k, l)).sum(),
            }
        };
        self.tables.iter().flatten().map(table).sum()
    }

    fn group(&self, kg: KeyGroup) -> Result<&[Table], StateError> {
        Ok(&self.tables[self.group_index(kg)?])
    }

    fn group_mut(&mut self, kg: KeyGroup) -> Result<&mut [Table], StateError> {
        let i = self.group_index(kg)?;
        Ok(&mut self.tables[i])
    }

    fn group_index(&self, kg: KeyGroup) -> Result<usize, StateError> {
        let kg32 = u32::from(kg);
        if !self.key_groups.contains(&kg32) {
            return Err(StateError::KeyGroupNotOwned { key_group: kg, range: self.key_groups.clone() });
        }
        Ok((kg32 - self.key_groups.start) as usize)
    }
}

/// Typed access to state `state`'s table in key group `kg`: the table's own variant is the check
/// that the state is declared with that kind.
macro_rules! typed_tables {
    ($($get:ident, $get_mut:ident, $variant:ident => $table:ty;)*) => {
        impl MemoryBackend {
            $(
                fn $get(&self, state: u32, kg: KeyGroup) -> Result<&$table, StateError> {
                    match self.group(kg)?.get(state as usize) {
                        Some(Table::$variant(t)) => Ok(t),
                        _ => Err(StateError::WrongState { state, expected: StateKind::$variant }),
                    }
                }

                fn $get_mut(&mut self, state: u32, kg: KeyGroup) -> Result<&mut $table, StateError> {
                    match self.group_mut(kg)?.get_mut(state as usize) {
                        Some(Table::$variant(t)) => Ok(t),
                        _ => Err(StateError::WrongState { state, expected: StateKind::$variant }),
                    }
                }
            )*
        }
    };
}

typed_tables! {
    values, values_mut, Value => ValueTable;
    maps, maps_mut, Map => Map<KeyMap>;
    lists, lists_mut, List => Map<Vec<Bytes>>;
}

impl StateBackend for MemoryBackend {
    fn value_get(&self, state: u32, kg: KeyGroup, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        let t = self.values(state, kg)?;
        Ok(t.get(key).map(|v| out.extend_from_slice(v)).is_some())
    }

    fn value_prefetch(&self, state: u32, kg: KeyGroup, key: &[u8]) {
        if let Ok(t) = self.values(state, kg) {
            t.prefetch(key);
        }
    }

    fn value_put(&mut self, state: u32, kg: KeyGroup, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let t = self.values_mut(state, kg)?;
        self.bytes = match t.put(key, value) {
            Some(replaced) => self.bytes + value.len() - replaced,
            None => self.bytes + entry_bytes(key.len() + value.len()),
        };
        Ok(())
    }

    fn map_get(
        &self,
        state: u32,
        kg: KeyGroup,
        key: &[u8],
        map_key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateError> {
        let t = self.maps(state, kg)?;
        Ok(t.get(key).and_then(|m| m.get(map_key)).map(|v| out.extend_from_slice(v)).is_some())
    }

    fn map_put(
        &mut self,
        state: u32,
        kg: KeyGroup,
        key: &[u8],
        map_key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        let t = self.maps_mut(state, kg)?;
        self.bytes = match t.get_mut(key) {
            Some(m) => match m.insert(map_key, value) {
                Some(replaced) => self.bytes + value.len() - replaced,
                None => self.bytes + entry_bytes(map_key.len() + value.len()),
            },
            None => {
                t.insert(key.into(), KeyMap::one(map_key, value));
                self.bytes + entry_bytes(key.len()) + entry_bytes(map_key.len() + value.len())
            }
        };
        Ok(())
    }

    fn map_remove(&mut self, state: u32, kg: KeyGroup, key: &[u8], map_key: &[u8]) -> Result<(), StateError> {
        let t = self.maps_mut(state, kg)?;
        let mut freed = 0;
        if let Some(m) = t.get_mut(key) {
            freed = m.remove(map_key).map_or(0, |v| entry_bytes(map_key.len() + v));
            if m.is_empty() {
                t.remove(key);
                freed += entry_bytes(key.len());
            }
        }
        self.bytes -= freed;
        Ok(())
    }

    fn map_entries(
        &self,
        state: u32,
        kg: KeyGroup,
        key: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError> {
        let t = self.maps(state, kg)?;
        for (k, v) in t.get(key).into_iter().flat_map(KeyMap::iter) {
            visit(k, v);
        }
        Ok(())
    }

    fn list_get(&self, state: u32, kg: KeyGroup, key: &[u8], visit: &mut dyn FnMut(&[u8])) -> Result<(), StateError> {
        let t = self.lists(state, kg)?;
        for v in t.get(key).into_iter().flatten() {
            visit(v);
        }
        Ok(())
    }

    fn list_append(&mut self, state: u32, kg: KeyGroup, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let t = self.lists_mut(state, kg)?;
        let new_key = match t.get_mut(key) {
            Some(list) => {
                list.push(value.into());
                0
            }
            None => {
                t.insert(key.into(), vec![value.into()]);
                entry_bytes(key.len())
            }
        };
        self.bytes += new_key + entry_bytes(value.len());
        Ok(())
    }

    fn clear(&mut self, state: u32, kg: KeyGroup, key: &[u8]) -> Result<(), StateError> {
        let freed = match self.group_mut(kg)?.get_mut(state as usize) {
            Some(Table::Value(t)) => t.remove(key).map_or(0, |v| entry_bytes(key.len() + v)),
            Some(Table::Map(t)) => t.remove(key).map_or(0, |m| map_bytes(key, &m)),
            Some(Table::List(t)) => t.remove(key).map_or(0, |l| list_bytes(key, &l)),
            None => return Err(StateError::UnknownState { state }),
        };
        self.bytes -= freed;
        Ok(())
    }

    fn scan_where(
        &self,
        key_groups: Range<u32>,
        only: Option<u32>,
        visit: &mut dyn FnMut(StateEntry<'_>),
    ) -> Result<(), StateError> {
        for kg in key_groups {
            let key_group = kg as KeyGroup;
            let tables = self.tables[self.group_index(key_group)?].iter().enumerate();
            for (state, table) in tables.filter(|&(state, _)| only.is_none_or(|only| only as usize == state)) {
                let state = state as u32;
                let mut emit = |key: &[u8], item| visit(StateEntry { key_group, state, key, item });
                match table {
                    Table::Value(t) => t.iter().for_each(|(k, v)| emit(k, StateItem::Value(v))),
                    Table::Map(t) => {
                        for (k, m) in t {
                            m.iter().for_each(|(mk, v)| emit(k, StateItem::MapEntry(mk, v)));
                        }
                    }
                    Table::List(t) => {
                        for (k, l) in t {
                            l.iter().for_each(|v| emit(k, StateItem::ListElement(v)));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn drop_key_groups(&mut self, key_groups: Range<u32>) -> Result<(), StateError> {
        for kg in key_groups.clone() {
            let i = self.group_index(kg as KeyGroup)?;
            self.tables[i] = self.kinds.iter().map(|&k| Table::new(k)).collect();
        }
        // Rare (a rescale or an upgrade's fold): counted again rather than tracked.
        self.bytes = self.count_bytes();
        Ok(())
    }

    fn split_off(&mut self, at: u32) -> Option<Box<dyn StateBackend>> {
        if at <= self.key_groups.start || at >= self.key_groups.end {
            return None;
        }
        let tables = self.tables.split_off((at - self.key_groups.start) as usize);
        let rest = at..self.key_groups.end;
        self.key_groups.end = at;
        // Shared by their entries, not counted again (the split is on the stop's path).
        let entries = |tables: &[Vec<Table>]| tables.iter().flatten().map(Table::len).sum::<usize>();
        let (kept, moved) = (entries(&self.tables), entries(&tables));
        let moved_bytes = (self.bytes as f64 * moved as f64 / (kept + moved).max(1) as f64) as usize;
        self.bytes -= moved_bytes.min(self.bytes);
        Some(Box::new(MemoryBackend { key_groups: rest, kinds: self.kinds.clone(), tables, bytes: moved_bytes }))
    }

    fn approximate_bytes(&self) -> Option<usize> {
        Some(self.bytes)
    }

    fn freezes_at_checkpoint(&self) -> bool {
        self.bytes > COPIED_AT_MOST
    }

    fn key_count(&self) -> usize {
        self.tables.iter().flatten().map(Table::len).sum()
    }

    super::in_memory_snapshots!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        super::super::conformance::run(&|range, kinds| Box::new(MemoryBackend::new(range, kinds)));
    }

    /// A split moves the key groups from the cut on, with their entries, into a backend of their
    /// own; each side reads its own, and a cut outside the range changes nothing.
    #[test]
    fn a_split_moves_the_key_groups_past_the_cut() {
        let mut b = MemoryBackend::new(10..20, &[StateKind::Value]);
        for kg in 10..20u16 {
            b.value_put(0, kg, format!("k{kg}").as_bytes(), b"v").unwrap();
        }
        assert!(b.split_off(10).is_none() && b.split_off(20).is_none());
        let rest = b.split_off(13).unwrap();
        assert_eq!((b.key_count(), rest.key_count()), (3, 7));
        let mut value = Vec::new();
        assert!(rest.value_get(0, 15, b"k15", &mut value).unwrap());
        assert!(b.value_get(0, 12, b"k12", &mut value).unwrap());
        assert!(b.value_get(0, 15, b"k15", &mut value).is_err(), "no longer its key group");
        assert!(rest.approximate_bytes().unwrap() > b.approximate_bytes().unwrap());
        assert_eq!(rest.approximate_bytes().unwrap() + b.approximate_bytes().unwrap(), 10 * entry_bytes(4));
    }

    /// The bytes tracked through every kind of write and removal equal a count of the tables.
    #[test]
    fn tracked_bytes_equal_a_count() {
        let kinds = [StateKind::Value, StateKind::Map, StateKind::List];
        let mut b = MemoryBackend::new(0..4, &kinds);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (kg, key) = ((x % 4) as KeyGroup, format!("k{}", (x >> 8) % 50));
            let (key, value) = (key.as_bytes(), vec![7u8; ((x >> 16) % 40) as usize]);
            let map_key = format!("m{}", (x >> 24) % 5);
            match (x >> 32) % 8 {
                0 | 1 => b.value_put(0, kg, key, &value).unwrap(),
                2 | 3 => b.map_put(1, kg, key, map_key.as_bytes(), &value).unwrap(),
                4 => b.map_remove(1, kg, key, map_key.as_bytes()).unwrap(),
                5 => b.list_append(2, kg, key, &value).unwrap(),
                _ => b.clear(((x >> 40) % 3) as u32, kg, key).unwrap(),
            }
            assert_eq!(b.bytes, b.count_bytes());
        }
        assert!(b.approximate_bytes().unwrap() > 0);
        b.drop_key_groups(0..2).unwrap();
        assert_eq!(b.bytes, b.count_bytes());
    }
}
