//! Typed handles to host-owned keyed state. Each handle reads and writes the state of the key of
//! the event being processed; values are JSON (serde).
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::{CellValue, Context};
use crate::{Error, Result};

/// One value per key. Reads and writes stay inside the batch buffers: no host call.
pub struct ValueState<T> {
    name: String,
    index: u32,
    pos: usize,
    _value: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    pub(crate) fn new(name: &str, index: u32, pos: usize) -> Self {
        ValueState { name: name.to_string(), index, pos, _value: PhantomData }
    }

    /// The value for the current key, or `None` when it was never set or was cleared.
    pub fn get(&self, ctx: &mut Context) -> Result<Option<T>> {
        match ctx.value_bytes(&self.name, self.pos)? {
            Some(bytes) => serde_json::from_slice(bytes).map(Some).map_err(|e| self.corrupt(e)),
            None => Ok(None),
        }
    }

    /// Reads the value for the current key into `value`, reusing its allocations (a `Vec`'s
    /// buffer, say) where serde can, instead of building a new one as [`ValueState::get`] does;
    /// false, with `value` untouched, when there is none. For an operator that reads a
    /// collection per event: keep one in the operator and read into it.
    pub fn get_into(&self, ctx: &mut Context, value: &mut T) -> Result<bool> {
        let Some(bytes) = ctx.value_bytes(&self.name, self.pos)? else { return Ok(false) };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        T::deserialize_in_place(&mut de, value).and_then(|()| de.end()).map_err(|e| self.corrupt(e))?;
        Ok(true)
    }

    /// Sets the value for the current key.
    pub fn set(&self, ctx: &mut Context, value: &T) -> Result<()> {
        let cell = ctx.cell(&self.name, self.pos)?;
        cell.buf.clear();
        serde_json::to_writer(&mut cell.buf, value)?;
        cell.value = CellValue::Written;
        cell.dirty = true;
        Ok(())
    }

    /// Removes the value for the current key.
    pub fn clear(&self, ctx: &mut Context) -> Result<()> {
        let cell = ctx.cell(&self.name, self.pos)?;
        cell.value = CellValue::Absent;
        cell.dirty = true;
        Ok(())
    }

    /// The state's index in `describe()`.
    pub fn index(&self) -> u32 {
        self.index
    }

    fn corrupt(&self, err: serde_json::Error) -> Error {
        Error::new(format!("value state '{}' holds bytes this operator cannot read: {err}", self.name))
    }
}

/// A map per key, reached through host calls.
pub struct MapState<K, V> {
    name: String,
    index: u32,
    _entry: PhantomData<fn() -> (K, V)>,
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> MapState<K, V> {
    pub(crate) fn new(name: &str, index: u32) -> Self {
        MapState { name: name.to_string(), index, _entry: PhantomData }
    }

    /// The value under `map_key` for the current key.
    pub fn get(&self, ctx: &Context, map_key: &K) -> Result<Option<V>> {
        let slot = ctx.slot(&self.name)?;
        match host::map_get(slot, self.index, &serde_json::to_vec(map_key)?) {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores `value` under `map_key` for the current key.
    pub fn insert(&self, ctx: &Context, map_key: &K, value: &V) -> Result<()> {
        let slot = ctx.slot(&self.name)?;
        host::map_put(slot, self.index, &serde_json::to_vec(map_key)?, &serde_json::to_vec(value)?);
        Ok(())
    }

    /// Removes `map_key` for the current key.
    pub fn remove(&self, ctx: &Context, map_key: &K) -> Result<()> {
        let slot = ctx.slot(&self.name)?;
        host::map_remove(slot, self.index, &serde_json::to_vec(map_key)?);
        Ok(())
    }

    /// All entries for the current key, ordered by the map key's JSON bytes.
    pub fn entries(&self, ctx: &Context) -> Result<Vec<(K, V)>> {
        let slot = ctx.slot(&self.name)?;
        host::map_entries(slot, self.index)
            .into_iter()
            .map(|(k, v)| Ok((serde_json::from_slice(&k)?, serde_json::from_slice(&v)?)))
            .collect()
    }

    /// Removes every entry for the current key.
    pub fn clear(&self, ctx: &Context) -> Result<()> {
        host::clear(ctx.slot(&self.name)?, self.index);
        Ok(())
    }
}

/// A list per key, reached through host calls.
pub struct ListState<T> {
    name: String,
    index: u32,
    _element: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> ListState<T> {
    pub(crate) fn new(name: &str, index: u32) -> Self {
        ListState { name: name.to_string(), index, _element: PhantomData }
    }

    /// The elements for the current key, oldest first.
    pub fn get(&self, ctx: &Context) -> Result<Vec<T>> {
        let slot = ctx.slot(&self.name)?;
        host::list_get(slot, self.index).iter().map(|bytes| Ok(serde_json::from_slice(bytes)?)).collect()
    }

    /// Appends an element for the current key.
    pub fn push(&self, ctx: &Context, value: &T) -> Result<()> {
        let slot = ctx.slot(&self.name)?;
        host::list_append(slot, self.index, &serde_json::to_vec(value)?);
        Ok(())
    }

    /// Removes every element for the current key.
    pub fn clear(&self, ctx: &Context) -> Result<()> {
        host::clear(ctx.slot(&self.name)?, self.index);
        Ok(())
    }
}

/// A broadcast state: one map, not keyed, the same in every subtask (Flink's broadcast state).
/// Written only while processing a broadcast input (the host refuses writes anywhere else), read
/// while processing any input or timer.
pub struct BroadcastState<K, V> {
    index: u32,
    _entry: PhantomData<fn() -> (K, V)>,
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> BroadcastState<K, V> {
    pub(crate) fn new(index: u32) -> Self {
        BroadcastState { index, _entry: PhantomData }
    }

    /// The value under `map_key`.
    pub fn get(&self, _ctx: &Context, map_key: &K) -> Result<Option<V>> {
        match host::broadcast_get(self.index, &serde_json::to_vec(map_key)?) {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every entry, ordered by the map key's JSON bytes.
    pub fn entries(&self, _ctx: &Context) -> Result<Vec<(K, V)>> {
        host::broadcast_entries(self.index)
            .into_iter()
            .map(|(k, v)| Ok((serde_json::from_slice(&k)?, serde_json::from_slice(&v)?)))
            .collect()
    }

    /// Stores `value` under `map_key` (only while processing a broadcast input).
    pub fn insert(&self, _ctx: &Context, map_key: &K, value: &V) -> Result<()> {
        host::broadcast_put(self.index, &serde_json::to_vec(map_key)?, &serde_json::to_vec(value)?);
        Ok(())
    }

    /// Removes `map_key` (only while processing a broadcast input).
    pub fn remove(&self, _ctx: &Context, map_key: &K) -> Result<()> {
        host::broadcast_remove(self.index, &serde_json::to_vec(map_key)?);
        Ok(())
    }
}

/// The host's `state` imports.
pub(crate) mod host {
    pub(crate) use crate::bindings::weir::operator::state::*;
}
