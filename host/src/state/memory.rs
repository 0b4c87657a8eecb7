//! The in-memory backend: one hash table per (key group, state), so that a key group's entries
//! can be scanned or dropped without touching the others.
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use super::value_table::ValueTable;
use super::{StateBackend, StateEntry, StateError, StateItem, StateKind};
use crate::runtime::key_group::KeyGroup;

type Bytes = Box<[u8]>;
type Map<V> = HashMap<Bytes, V, foldhash::fast::RandomState>;

enum Table {
    Value(ValueTable),
    Map(Map<BTreeMap<Bytes, Bytes>>),
    List(Map<Vec<Bytes>>),
}

impl Table {
    fn new(kind: StateKind) -> Self {
        match kind {
            StateKind::Value => Table::Value(ValueTable::new(Default::default())),
            StateKind::Map => Table::Map(Map::default()),
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
}

impl MemoryBackend {
    /// An empty backend for the key groups `key_groups` and the declared states `kinds`.
    pub fn new(key_groups: Range<u32>, kinds: &[StateKind]) -> Self {
        let tables = key_groups.clone().map(|_| kinds.iter().map(|&k| Table::new(k)).collect()).collect();
        MemoryBackend { key_groups, kinds: kinds.to_vec(), tables }
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
    maps, maps_mut, Map => Map<BTreeMap<Bytes, Bytes>>;
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
        t.put(key, value);
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
        t.entry(key.into()).or_default().insert(map_key.into(), value.into());
        Ok(())
    }

    fn map_remove(&mut self, state: u32, kg: KeyGroup, key: &[u8], map_key: &[u8]) -> Result<(), StateError> {
        let t = self.maps_mut(state, kg)?;
        if let Some(m) = t.get_mut(key) {
            m.remove(map_key);
            if m.is_empty() {
                t.remove(key);
            }
        }
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
        for (k, v) in t.get(key).into_iter().flatten() {
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
        t.entry(key.into()).or_default().push(value.into());
        Ok(())
    }

    fn clear(&mut self, state: u32, kg: KeyGroup, key: &[u8]) -> Result<(), StateError> {
        match self.group_mut(kg)?.get_mut(state as usize) {
            Some(Table::Value(t)) => t.remove(key),
            Some(Table::Map(t)) => drop(t.remove(key)),
            Some(Table::List(t)) => drop(t.remove(key)),
            None => return Err(StateError::UnknownState { state }),
        }
        Ok(())
    }

    fn scan(&self, key_groups: Range<u32>, visit: &mut dyn FnMut(StateEntry<'_>)) -> Result<(), StateError> {
        for kg in key_groups {
            let key_group = kg as KeyGroup;
            for (state, table) in self.tables[self.group_index(key_group)?].iter().enumerate() {
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
        for kg in key_groups {
            let i = self.group_index(kg as KeyGroup)?;
            self.tables[i] = self.kinds.iter().map(|&k| Table::new(k)).collect();
        }
        Ok(())
    }

    fn key_count(&self) -> usize {
        self.tables.iter().flatten().map(Table::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        super::super::conformance::run(&|range, kinds| Box::new(MemoryBackend::new(range, kinds)));
    }
}
