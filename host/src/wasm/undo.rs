//! What a guest call changed in state through the `state` imports, kept so that a failed call can
//! be taken back: an operator that sets failing events aside (see [`super::quarantine`]) retries
//! the rest of the batch from the state before the call. Value states need no record: their
//! writes come in the output frame, applied only when the call succeeded.
use crate::key_group::KeyGroup;
use crate::state::broadcast::BroadcastState;
use crate::state::{StateBackend, StateError, StateKind};

/// One change, with what it replaced (stored bytes, an expiry included).
enum Change {
    /// A value state's value (a `clear` of a value state).
    Value { state: u32, kg: KeyGroup, key: Vec<u8>, before: Option<Vec<u8>> },
    /// One entry of a map state.
    MapEntry { state: u32, kg: KeyGroup, key: Vec<u8>, map_key: Vec<u8>, before: Option<Vec<u8>> },
    /// A whole map state of a key (a `clear`).
    Map { state: u32, kg: KeyGroup, key: Vec<u8>, before: Vec<(Vec<u8>, Vec<u8>)> },
    /// A list state of a key (an append or a `clear`).
    List { state: u32, kg: KeyGroup, key: Vec<u8>, before: Vec<Vec<u8>> },
    /// One entry of a broadcast state.
    Broadcast { state: u32, key: Vec<u8>, before: Option<Vec<u8>> },
}

/// The changes of the call in progress, oldest first.
#[derive(Default)]
pub(crate) struct UndoLog {
    changes: Vec<Change>,
}

impl UndoLog {
    /// Before entry `map_key` of map state `state` of `key` changes.
    pub(crate) fn map_entry(
        &mut self,
        backend: &dyn StateBackend,
        (state, kg, key): (u32, KeyGroup, &[u8]),
        map_key: &[u8],
    ) -> Result<(), StateError> {
        let mut out = Vec::new();
        let before = backend.map_get(state, kg, key, map_key, &mut out)?.then_some(out);
        self.changes.push(Change::MapEntry { state, kg, key: key.to_vec(), map_key: map_key.to_vec(), before });
        Ok(())
    }

    /// Before list state `state` of `key` changes.
    pub(crate) fn list(
        &mut self,
        backend: &dyn StateBackend,
        (state, kg, key): (u32, KeyGroup, &[u8]),
    ) -> Result<(), StateError> {
        let mut before = Vec::new();
        backend.list_get(state, kg, key, &mut |item| before.push(item.to_vec()))?;
        self.changes.push(Change::List { state, kg, key: key.to_vec(), before });
        Ok(())
    }

    /// Before state `state` (of `kind`) of `key` is cleared.
    pub(crate) fn clear(
        &mut self,
        backend: &dyn StateBackend,
        kind: StateKind,
        (state, kg, key): (u32, KeyGroup, &[u8]),
    ) -> Result<(), StateError> {
        match kind {
            StateKind::Map => {
                let mut before = Vec::new();
                backend.map_entries(state, kg, key, &mut |k, v| before.push((k.to_vec(), v.to_vec())))?;
                self.changes.push(Change::Map { state, kg, key: key.to_vec(), before });
            }
            StateKind::List => self.list(backend, (state, kg, key))?,
            _ => {
                let mut out = Vec::new();
                let before = backend.value_get(state, kg, key, &mut out)?.then_some(out);
                self.changes.push(Change::Value { state, kg, key: key.to_vec(), before });
            }
        }
        Ok(())
    }

    /// Before entry `key` of broadcast state `state` changes.
    pub(crate) fn broadcast(&mut self, broadcast: &BroadcastState, state: u32, key: &[u8]) -> Result<(), String> {
        let before = broadcast.get(state, key)?.map(<[u8]>::to_vec);
        self.changes.push(Change::Broadcast { state, key: key.to_vec(), before });
        Ok(())
    }

    /// Puts back what the call changed, newest change first.
    pub(crate) fn undo(self, backend: &mut dyn StateBackend, broadcast: &mut BroadcastState) -> Result<(), String> {
        for change in self.changes.into_iter().rev() {
            if let Change::Broadcast { state, key, before } = change {
                match before {
                    Some(value) => broadcast.put(state, key, value),
                    None => broadcast.remove(state, &key),
                }?;
                continue;
            }
            undo_keyed(backend, change).map_err(|e| format!("state backend: {e}"))?;
        }
        Ok(())
    }
}

/// Puts back one change of keyed state.
fn undo_keyed(backend: &mut dyn StateBackend, change: Change) -> Result<(), StateError> {
    match change {
        Change::Value { state, kg, key, before: Some(value) } => backend.value_put(state, kg, &key, &value),
        Change::Value { state, kg, key, before: None } => backend.clear(state, kg, &key),
        Change::MapEntry { state, kg, key, map_key, before: Some(value) } => {
            backend.map_put(state, kg, &key, &map_key, &value)
        }
        Change::MapEntry { state, kg, key, map_key, before: None } => backend.map_remove(state, kg, &key, &map_key),
        Change::Map { state, kg, key, before } => {
            backend.clear(state, kg, &key)?;
            before.iter().try_for_each(|(k, v)| backend.map_put(state, kg, &key, k, v))
        }
        Change::List { state, kg, key, before } => {
            backend.clear(state, kg, &key)?;
            before.iter().try_for_each(|item| backend.list_append(state, kg, &key, item))
        }
        Change::Broadcast { .. } => Ok(()),
    }
}
