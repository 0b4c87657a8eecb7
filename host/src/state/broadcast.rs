//! Broadcast state (Flink's broadcast state pattern): maps that are not keyed, one per broadcast
//! state an operator declares, the same in every subtask because only a broadcast input, which
//! every subtask reads whole and in the same order, writes them.
//!
//! It is held in memory beside the keyed backend, whatever the backend, as Flink holds its
//! broadcast state on the heap: it is small by nature (rules, thresholds, configuration). A
//! checkpoint records it once per operator, subtask 0's copy in the checkpoint's metadata, and a
//! restore gives every subtask that copy, at any parallelism.
use std::collections::BTreeMap;

use super::{StateDescriptor, StateKind};

/// Most bytes of keys and values an operator's broadcast state may hold: every subtask keeps a
/// copy in memory, and every checkpoint's metadata one more.
pub const BROADCAST_LIMIT: usize = 16 << 20;

/// One subtask's copy of an operator's broadcast states.
#[derive(Debug, Clone, Default)]
pub struct BroadcastState {
    /// Per declared state, by index: its entries when it is a broadcast state.
    maps: Vec<Option<BTreeMap<Vec<u8>, Vec<u8>>>>,
    /// Bytes of keys and values held.
    bytes: usize,
}

/// Broadcast state as checkpoints and savepoints record it: each broadcast state by name, with
/// the schema version its entries are in and the entries as hex pairs (key, value).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SavedBroadcast {
    /// The operator's broadcast states.
    pub states: Vec<SavedBroadcastState>,
}

/// One broadcast state in a [`SavedBroadcast`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SavedBroadcastState {
    /// Its name: matched to the declared states on restore.
    pub name: String,
    /// The layout version of its values.
    pub schema_version: u32,
    /// Its entries, ordered by key bytes, each as hex key and hex value.
    pub entries: Vec<[String; 2]>,
}

impl BroadcastState {
    /// Empty broadcast states for the declared `states` (none when it declares no broadcast state).
    pub fn new(states: &[StateDescriptor]) -> Self {
        let maps = states.iter().map(|s| (s.kind == StateKind::Broadcast).then(BTreeMap::new)).collect();
        BroadcastState { maps, bytes: 0 }
    }

    /// Whether the operator declares any broadcast state.
    pub fn is_declared(&self) -> bool {
        self.maps.iter().any(Option::is_some)
    }

    fn map(&self, state: u32) -> Result<&BTreeMap<Vec<u8>, Vec<u8>>, String> {
        self.maps.get(state as usize).and_then(Option::as_ref).ok_or_else(|| not_broadcast(state))
    }

    /// The value under `key` in broadcast state `state`.
    pub fn get(&self, state: u32, key: &[u8]) -> Result<Option<&[u8]>, String> {
        Ok(self.map(state)?.get(key).map(Vec::as_slice))
    }

    /// Every entry of broadcast state `state`, ordered by key bytes.
    pub fn entries(&self, state: u32) -> Result<impl Iterator<Item = (&[u8], &[u8])>, String> {
        Ok(self.map(state)?.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }

    /// Stores `value` under `key`; refused past [`BROADCAST_LIMIT`].
    pub fn put(&mut self, state: u32, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        let map = self.maps.get_mut(state as usize).and_then(Option::as_mut).ok_or_else(|| not_broadcast(state))?;
        let added = key.len() + value.len();
        let replaced = map.get(&key).map_or(0, |old| key.len() + old.len());
        let bytes = self.bytes + added - replaced;
        if bytes > BROADCAST_LIMIT {
            return Err(format!(
                "its broadcast state would grow past {} MiB, the most it may hold (every subtask keeps a copy in \
                 memory): keep less in broadcast state, or key it and read it by hash",
                BROADCAST_LIMIT >> 20
            ));
        }
        map.insert(key, value);
        self.bytes = bytes;
        Ok(())
    }

    /// Removes `key` from broadcast state `state`.
    pub fn remove(&mut self, state: u32, key: &[u8]) -> Result<(), String> {
        let map = self.maps.get_mut(state as usize).and_then(Option::as_mut).ok_or_else(|| not_broadcast(state))?;
        if let Some(old) = map.remove(key) {
            self.bytes -= key.len() + old.len();
        }
        Ok(())
    }

    /// What a checkpoint records of it, for the declared `states`; `None` when there is no
    /// broadcast state among them.
    pub fn save(&self, states: &[StateDescriptor]) -> Option<SavedBroadcast> {
        let states = states
            .iter()
            .zip(&self.maps)
            .filter_map(|(d, map)| {
                let entries = map.as_ref()?.iter().map(|(k, v)| [hex::encode(k), hex::encode(v)]).collect();
                Some(SavedBroadcastState { name: d.name.clone(), schema_version: d.schema_version, entries })
            })
            .collect::<Vec<_>>();
        (!states.is_empty()).then_some(SavedBroadcast { states })
    }

    /// Broadcast states for the declared `states` holding what `saved` recorded of those of the
    /// same names, with the schema version each was saved in (by declared index; a state not
    /// saved starts empty). `at` names the checkpoint or savepoint in errors.
    pub fn restore(
        states: &[StateDescriptor],
        saved: &SavedBroadcast,
        at: &str,
    ) -> Result<(Self, Vec<Option<u32>>), String> {
        let mut restored = BroadcastState::new(states);
        let mut versions = vec![None; states.len()];
        for s in &saved.states {
            let Some(i) = states.iter().position(|d| d.name == s.name && d.kind == StateKind::Broadcast) else {
                continue;
            };
            versions[i] = Some(s.schema_version);
            for [k, v] in &s.entries {
                let (Ok(key), Ok(value)) = (hex::decode(k), hex::decode(v)) else {
                    return Err(format!("broadcast state '{}' in {at} holds an entry that is not hex", s.name));
                };
                restored.put(i as u32, key, value)?;
            }
        }
        Ok((restored, versions))
    }

    /// Broadcast states for the declared `states` holding what `saved` recorded of them (empty
    /// without it), each state saved under another schema version rewritten through `migrate`
    /// (the guest's `migrate` export: the migration, values in, as many values out).
    pub fn restore_migrated(
        states: &[StateDescriptor],
        saved: Option<&SavedBroadcast>,
        mut migrate: impl FnMut(super::Migration, &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String>,
    ) -> Result<Self, String> {
        let Some(saved) = saved else { return Ok(BroadcastState::new(states)) };
        let restoring = |e: String| format!("cannot restore its broadcast state: {e}");
        let (mut broadcast, versions) =
            BroadcastState::restore(states, saved, "the state restored").map_err(restoring)?;
        for migration in super::migrations_needed(states, &versions).map_err(restoring)? {
            let name = &states[migration.state as usize].name;
            broadcast.migrate(migration.state, |items| migrate(migration, &items)).map_err(|e| {
                format!("cannot migrate state '{name}' from schema version {}: {e}", migration.from_version)
            })?;
        }
        Ok(broadcast)
    }

    /// Rewrites every value of broadcast state `state` through `migrate` (values in, as many
    /// values out, in the same order): the entries of a state saved under an older schema version.
    pub fn migrate(
        &mut self,
        state: u32,
        migrate: impl FnOnce(Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, String>,
    ) -> Result<usize, String> {
        let map = self.maps.get_mut(state as usize).and_then(Option::as_mut).ok_or_else(|| not_broadcast(state))?;
        let keys: Vec<Vec<u8>> = map.keys().cloned().collect();
        let values = migrate(map.values().cloned().collect())?;
        if values.len() != keys.len() {
            return Err(format!("migrate returned {} items for {}", values.len(), keys.len()));
        }
        let count = keys.len();
        map.clear();
        self.bytes = 0;
        for (key, value) in keys.into_iter().zip(values) {
            self.put(state, key, value)?;
        }
        Ok(count)
    }
}

fn not_broadcast(state: u32) -> String {
    format!("state #{state} is not a declared broadcast state")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Vec<StateDescriptor> {
        vec![StateDescriptor::new("count", StateKind::Value, 1), StateDescriptor::new("rules", StateKind::Broadcast, 2)]
    }

    #[test]
    fn saved_and_restored_by_name() {
        let mut b = BroadcastState::new(&declared());
        assert!(b.is_declared());
        b.put(1, b"page-1".to_vec(), b"5".to_vec()).unwrap();
        b.put(1, b"page-0".to_vec(), b"3".to_vec()).unwrap();
        b.remove(1, b"nothing").unwrap();
        assert!(b.put(0, b"k".to_vec(), b"v".to_vec()).unwrap_err().contains("state #0 is not"));
        let saved = b.save(&declared()).unwrap();
        assert_eq!(saved.states[0].entries[0], ["706167652d30".to_string(), "33".to_string()]);
        // Restored into code that declares it at another index.
        let moved = vec![StateDescriptor::new("rules", StateKind::Broadcast, 2)];
        let (restored, versions) = BroadcastState::restore(&moved, &saved, "savepoint 3").unwrap();
        assert_eq!(versions, vec![Some(2)]);
        let entries: Vec<_> = restored.entries(0).unwrap().collect();
        assert_eq!(entries, vec![(&b"page-0"[..], &b"3"[..]), (&b"page-1"[..], &b"5"[..])]);
        assert_eq!(BroadcastState::new(&declared()[..1]).save(&declared()[..1]), None);
    }

    #[test]
    fn migrated_values_keep_their_keys_and_a_wrong_count_is_refused() {
        let mut b = BroadcastState::new(&declared());
        b.put(1, b"a".to_vec(), b"1".to_vec()).unwrap();
        b.put(1, b"b".to_vec(), b"2".to_vec()).unwrap();
        let migrated = b.migrate(1, |values| Ok(values.iter().map(|v| [b"{\"n\":", &v[..], b"}"].concat()).collect()));
        assert_eq!(migrated, Ok(2));
        let entries: Vec<_> = b.entries(1).unwrap().collect();
        assert_eq!(entries, vec![(&b"a"[..], &b"{\"n\":1}"[..]), (&b"b"[..], &b"{\"n\":2}"[..])]);
        assert!(b.migrate(1, |_| Ok(Vec::new())).unwrap_err().contains("migrate returned 0 items for 2"));
        assert!(b.migrate(0, Ok).unwrap_err().contains("state #0 is not"));
    }

    #[test]
    fn limited() {
        let mut b = BroadcastState::new(&declared());
        let big = vec![0u8; BROADCAST_LIMIT / 2];
        b.put(1, b"a".to_vec(), big.clone()).unwrap();
        // Replacing a value counts the difference only.
        b.put(1, b"a".to_vec(), big.clone()).unwrap();
        assert!(b.put(1, b"b".to_vec(), big).unwrap_err().contains("16 MiB"));
    }
}
