//! The state an operator subtask starts with ([`StateRestore`], [`RestoredState`]) and the
//! migration of entries saved under an older schema version ([`Migration`], [`rewrite_items`]).
use std::ops::Range;

use super::{StateBackend, StateDescriptor, StateItem};
use crate::key_group::KeyGroup;

/// Gives an operator subtask the state it starts with. Called with the backends its job keeps
/// state in, the kinds of the states it declares, the key groups it owns and its subtask index,
/// it returns a backend of those filled with saved entries (from a checkpoint or savepoint), or
/// opened on a native snapshot's files, or the backend the same subtask held before an upgrade,
/// handed over in place (then no backend is opened only to be dropped).
pub type StateRestore = std::sync::Arc<
    dyn Fn(&super::Backends, &[super::StateKind], Range<u32>, u32) -> Result<RestoredState, String> + Send + Sync,
>;

/// What a [`StateRestore`] gives an operator subtask: its backend, and the schema version each
/// declared state's entries were saved under (`None` when nothing was saved for it), so that
/// entries saved under an older layout are migrated before the operator reads them.
pub struct RestoredState {
    /// The backend, its entries as they were saved.
    pub backend: Box<dyn StateBackend>,
    /// Per declared state, in order.
    pub saved_versions: Vec<Option<u32>>,
    /// The timers, when handed over with the backend (else they are found in the backend).
    pub timers: Option<super::timers::TimerQueue>,
    /// The operator's broadcast state, the same for every subtask, if it recorded any.
    pub broadcast: Option<super::broadcast::SavedBroadcast>,
}

/// A declared state whose restored entries are in an older layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// The state's index in the declaration.
    pub state: u32,
    /// The schema version its entries were saved under.
    pub from_version: u32,
}

impl RestoredState {
    /// The migrations the restored entries need before code declaring `declared` reads them
    /// (see [`migrations_needed`]).
    pub fn migrations(&self, declared: &[StateDescriptor]) -> Result<Vec<Migration>, String> {
        migrations_needed(declared, &self.saved_versions)
    }
}

/// The migrations entries saved under `saved_versions` (per declared state, in order; `None`:
/// nothing saved) need before code declaring `declared` reads them; an error names a state saved
/// under a version that code cannot migrate from. For keyed and broadcast state alike.
pub fn migrations_needed(
    declared: &[StateDescriptor],
    saved_versions: &[Option<u32>],
) -> Result<Vec<Migration>, String> {
    let mut migrations = Vec::new();
    for (state, (d, saved)) in (0u32..).zip(declared.iter().zip(saved_versions)) {
        match *saved {
            Some(from_version) if from_version != d.schema_version => {
                if !d.migrates_from.contains(&from_version) {
                    return Err(format!(
                        "state '{}' was saved with schema version {from_version}, and this code declares schema \
                         version {} without a migration from it",
                        d.name, d.schema_version
                    ));
                }
                migrations.push(Migration { state, from_version });
            }
            _ => {}
        }
    }
    Ok(migrations)
}

/// Where [`rewrite_items`] puts a rewritten item back.
enum ItemPlace {
    Value,
    Map(Vec<u8>),
    List,
}

/// Rewrites every stored item of state `state` in `key_groups` (values, map values or list
/// elements; keys and map keys stay) through `rewrite`, one key group at a time: how restored
/// entries migrate to a new layout. `rewrite` is handed one key group's items and returns as
/// many, in the same order. Returns the number of items rewritten.
pub fn rewrite_items(
    backend: &mut dyn StateBackend,
    state: u32,
    key_groups: Range<u32>,
    rewrite: &mut dyn FnMut(Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, String>,
) -> Result<u64, String> {
    let mut rewritten = 0;
    for kg in key_groups {
        // Where each item of the state in this key group is stored, and the item, in scan order.
        let mut entries: Vec<(Vec<u8>, ItemPlace)> = Vec::new();
        let mut items = Vec::new();
        backend
            .scan(kg..kg + 1, &mut |e| {
                if e.state != state {
                    return;
                }
                let (place, item) = match e.item {
                    StateItem::Value(v) => (ItemPlace::Value, v),
                    StateItem::MapEntry(k, v) => (ItemPlace::Map(k.to_vec()), v),
                    StateItem::ListElement(v) => (ItemPlace::List, v),
                };
                entries.push((e.key.to_vec(), place));
                items.push(item.to_vec());
            })
            .map_err(|e| e.to_string())?;
        if items.is_empty() {
            continue;
        }
        let new_items = rewrite(items)?;
        if new_items.len() != entries.len() {
            return Err(format!("{} items were migrated into {}", entries.len(), new_items.len()));
        }
        let kg = kg as KeyGroup;
        let mut cleared_lists = std::collections::HashSet::new();
        for ((key, place), item) in entries.iter().zip(&new_items) {
            let written = match place {
                ItemPlace::Value => backend.value_put(state, kg, key, item),
                ItemPlace::Map(map_key) => backend.map_put(state, kg, key, map_key, item),
                ItemPlace::List => {
                    // A list is written anew, its elements in their order.
                    if cleared_lists.insert(key.as_slice()) {
                        backend.clear(state, kg, key).map_err(|e| e.to_string())?;
                    }
                    backend.list_append(state, kg, key, item)
                }
            };
            written.map_err(|e| e.to_string())?;
        }
        rewritten += new_items.len() as u64;
    }
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryBackend, StateKind};

    /// A backend over key groups 0..4 with a value, a map and a list state, two keys per group.
    fn filled() -> MemoryBackend {
        let mut b = MemoryBackend::new(0..4, &[StateKind::Value, StateKind::Map, StateKind::List]);
        for kg in 0..4u16 {
            for key in [b"a".as_slice(), b"b"] {
                b.value_put(0, kg, key, b"1").unwrap();
                b.map_put(1, kg, key, b"m", b"2").unwrap();
                b.map_put(1, kg, key, b"n", b"3").unwrap();
                for element in [b"4", b"5", b"6"] {
                    b.list_append(2, kg, key, element).unwrap();
                }
            }
        }
        b
    }

    fn doubled(items: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, String> {
        Ok(items.into_iter().map(|i| [i.clone(), i].concat()).collect())
    }

    #[test]
    fn rewrite_items_rewrites_one_state_in_the_key_groups_given() {
        let mut b = filled();
        let mut calls = 0;
        let mut rewrite = |items| {
            calls += 1;
            doubled(items)
        };
        assert_eq!(rewrite_items(&mut b, 2, 1..3, &mut rewrite).unwrap(), 2 * 2 * 3);
        assert_eq!(calls, 2, "one call per key group");
        assert_eq!(rewrite_items(&mut b, 1, 0..4, &mut doubled).unwrap(), 4 * 2 * 2);
        assert_eq!(rewrite_items(&mut b, 0, 3..4, &mut doubled).unwrap(), 2);
        let list = |b: &MemoryBackend, kg| {
            let mut items = Vec::new();
            b.list_get(2, kg, b"a", &mut |v| items.push(v.to_vec())).unwrap();
            items
        };
        assert_eq!(list(&b, 0), [b"4".to_vec(), b"5".to_vec(), b"6".to_vec()], "outside the range: as it was");
        assert_eq!(list(&b, 1), [b"44".to_vec(), b"55".to_vec(), b"66".to_vec()], "in order, not appended twice");
        let mut map = Vec::new();
        b.map_entries(1, 0, b"b", &mut |k, v| map.push((k.to_vec(), v.to_vec()))).unwrap();
        assert_eq!(map, [(b"m".to_vec(), b"22".to_vec()), (b"n".to_vec(), b"33".to_vec())], "map keys kept");
        let value = |kg| {
            let mut out = Vec::new();
            b.value_get(0, kg, b"a", &mut out).unwrap();
            out
        };
        assert_eq!((value(2), value(3)), (b"1".to_vec(), b"11".to_vec()));
    }

    #[test]
    fn rewrite_items_fails_on_an_error_or_a_wrong_count() {
        let mut b = filled();
        let refused = rewrite_items(&mut b, 0, 0..4, &mut |_| Err("not a count".to_string()));
        assert_eq!(refused.unwrap_err(), "not a count");
        let short = rewrite_items(&mut b, 0, 0..4, &mut |mut items| {
            items.pop();
            Ok(items)
        });
        assert_eq!(short.unwrap_err(), "2 items were migrated into 1");
    }

    #[test]
    fn migrations_are_asked_for_states_saved_under_an_older_version() {
        let mut declared =
            vec![StateDescriptor::new("count", StateKind::Value, 3), StateDescriptor::new("seen", StateKind::Map, 1)];
        declared[0].migrates_from = vec![1];
        let restored = |saved_versions| RestoredState {
            backend: Box::new(filled()),
            saved_versions,
            timers: None,
            broadcast: None,
        };
        assert_eq!(restored(vec![Some(3), None]).migrations(&declared).unwrap(), []);
        assert_eq!(
            restored(vec![Some(1), Some(1)]).migrations(&declared).unwrap(),
            [Migration { state: 0, from_version: 1 }]
        );
        assert_eq!(
            restored(vec![Some(2), Some(1)]).migrations(&declared).unwrap_err(),
            "state 'count' was saved with schema version 2, and this code declares schema version 3 without a \
             migration from it"
        );
    }
}
