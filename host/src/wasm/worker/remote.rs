//! Map and list state of a worker's guest, asked of the subtask that owns it: each `state` import
//! the guest calls during a batch (`map-get`, `list-append`, `clear`…) is one request over the
//! socket, answered from the subtask's Flink state before the guest goes on.
//!
//! ```text
//! worker → subtask   3 state        u8 op, u32 state, bytes key, then per op:
//!                                   1 map-get      bytes map-key
//!                                   2 map-put      bytes map-key, bytes value
//!                                   3 map-remove   bytes map-key
//!                                   4 map-entries
//!                                   5 list-get
//!                                   6 list-append  bytes value
//!                                   7 clear
//! subtask → worker   4 state-reply  map-get: opt-bytes; map-entries: u32 n, n × (bytes, bytes)
//!                                   in map-key byte order; list-get: u32 n, n × bytes; else empty
//!                    9 error        text
//! ```
use std::ops::Range;
use std::sync::{Arc, Mutex};

use weir_frame::{Reader, put_bytes, put_u32};

use super::{Channel, tag};
use crate::key_group::KeyGroup;
use crate::state::{MemoryBackend, SnapshotBody, StateBackend, StateDescriptor, StateEntry, StateError};

/// The operations, as the requests name them.
mod op {
    pub(super) const MAP_GET: u8 = 1;
    pub(super) const MAP_PUT: u8 = 2;
    pub(super) const MAP_REMOVE: u8 = 3;
    pub(super) const MAP_ENTRIES: u8 = 4;
    pub(super) const LIST_GET: u8 = 5;
    pub(super) const LIST_APPEND: u8 = 6;
    pub(super) const CLEAR: u8 = 7;
}

/// A [`StateBackend`] whose keyed state is the subtask's: only the calls a guest's `state`
/// imports make reach it.
pub(super) struct RemoteState {
    pub(super) channel: Arc<Mutex<Channel>>,
}

fn failed(cause: String) -> StateError {
    StateError::Storage { cause }
}

impl RemoteState {
    /// Sends one request; the reply's body.
    fn ask(&self, operation: u8, state: u32, key: &[u8], args: &[&[u8]]) -> Result<Vec<u8>, StateError> {
        let mut request = vec![operation];
        put_u32(&mut request, state);
        put_bytes(&mut request, key);
        for arg in args {
            put_bytes(&mut request, arg);
        }
        let mut channel = self.channel.lock().map_err(|_| failed("the subtask's connection is poisoned".into()))?;
        channel.send(tag::STATE, &request).map_err(|e| failed(format!("cannot ask the subtask for state: {e}")))?;
        let mut reply = Vec::new();
        match channel.receive(&mut reply).map_err(failed)? {
            Some(tag::STATE_REPLY) => Ok(reply),
            Some(tag::ERROR) => Err(failed(String::from_utf8_lossy(&reply).into_owned())),
            Some(other) => Err(failed(format!("the subtask answered a state request with message {other}"))),
            None => Err(failed("the subtask closed the connection".into())),
        }
    }

    fn unused(&self, what: &str) -> StateError {
        failed(format!("{what} is the subtask's (its engine keeps this state), never a worker's"))
    }
}

fn truncated(_: weir_frame::Truncated) -> StateError {
    failed("the subtask's state reply is truncated".into())
}

impl StateBackend for RemoteState {
    fn value_get(&self, _: u32, _: KeyGroup, _: &[u8], _: &mut Vec<u8>) -> Result<bool, StateError> {
        Err(self.unused("value state (it travels in the frames)"))
    }

    fn value_put(&mut self, _: u32, _: KeyGroup, _: &[u8], _: &[u8]) -> Result<(), StateError> {
        Err(self.unused("value state (it travels in the frames)"))
    }

    fn map_get(
        &self,
        state: u32,
        _: KeyGroup,
        key: &[u8],
        map_key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateError> {
        let reply = self.ask(op::MAP_GET, state, key, &[map_key])?;
        match Reader::new(&reply).opt_bytes().map_err(truncated)? {
            Some(value) => {
                out.extend_from_slice(value);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn map_put(&mut self, state: u32, _: KeyGroup, key: &[u8], map_key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.ask(op::MAP_PUT, state, key, &[map_key, value]).map(drop)
    }

    fn map_remove(&mut self, state: u32, _: KeyGroup, key: &[u8], map_key: &[u8]) -> Result<(), StateError> {
        self.ask(op::MAP_REMOVE, state, key, &[map_key]).map(drop)
    }

    fn map_entries(
        &self,
        state: u32,
        _: KeyGroup,
        key: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError> {
        let reply = self.ask(op::MAP_ENTRIES, state, key, &[])?;
        let mut reader = Reader::new(&reply);
        for _ in 0..reader.u32().map_err(truncated)? {
            let map_key = reader.bytes().map_err(truncated)?;
            visit(map_key, reader.bytes().map_err(truncated)?);
        }
        Ok(())
    }

    fn list_get(&self, state: u32, _: KeyGroup, key: &[u8], visit: &mut dyn FnMut(&[u8])) -> Result<(), StateError> {
        let reply = self.ask(op::LIST_GET, state, key, &[])?;
        let mut reader = Reader::new(&reply);
        for _ in 0..reader.u32().map_err(truncated)? {
            visit(reader.bytes().map_err(truncated)?);
        }
        Ok(())
    }

    fn list_append(&mut self, state: u32, _: KeyGroup, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.ask(op::LIST_APPEND, state, key, &[value]).map(drop)
    }

    fn clear(&mut self, state: u32, _: KeyGroup, key: &[u8]) -> Result<(), StateError> {
        self.ask(op::CLEAR, state, key, &[]).map(drop)
    }

    fn scan_where(&self, _: Range<u32>, _: Option<u32>, _: &mut dyn FnMut(StateEntry<'_>)) -> Result<(), StateError> {
        Err(self.unused("a scan of state"))
    }

    fn drop_key_groups(&mut self, _: Range<u32>) -> Result<(), StateError> {
        Err(self.unused("dropping key groups"))
    }

    fn key_count(&self) -> usize {
        0
    }

    fn snapshot(&self, _: Range<u32>, _: &[StateDescriptor]) -> Result<Box<dyn SnapshotBody>, StateError> {
        Err(self.unused("a snapshot"))
    }

    fn freeze(
        self: Box<Self>,
        key_groups: Range<u32>,
        states: &[StateDescriptor],
    ) -> (Box<dyn SnapshotBody>, Box<dyn StateBackend>) {
        // Never called (a worker takes no snapshots): an empty one, and the subtask's state on.
        let (body, _) = Box::new(MemoryBackend::new(0..0, &[])).freeze(key_groups, states);
        (body, self)
    }
}
