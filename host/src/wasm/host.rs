//! The store's data and the host side of the `weir:operator` imports (`state`, `log`).
//!
//! The `state` functions resolve a guest's slot through the current batch's key table, which holds
//! only keys of events routed to this subtask: a guest cannot name another key, nor a key group
//! its subtask does not own. Misuse is a trap (the outer error), so it fails the job with a message
//! instead of being something a guest could ignore.
use std::hash::BuildHasher;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, format_err};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings;
use super::undo::UndoLog;
use crate::key_group::KeyGroup;
use crate::state::broadcast::BroadcastState;
use crate::state::{MemoryBackend, StateBackend, StateError, StateKind, TimerQueue, same_bytes, ttl};

/// Memory limit of one instance (of each of its linear memories); exceeding it traps with a
/// message that says so.
pub(crate) struct MemoryLimit {
    pub(crate) bytes: usize,
    /// The size of its largest memory.
    pub(crate) largest: usize,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.bytes {
            return Err(format_err!(
                "memory limit of {} exceeded (the guest asked for {}); raise `memory-limit` if this is expected",
                mib(self.bytes),
                mib(desired)
            ));
        }
        self.largest = self.largest.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// A size in MiB, without decimals when whole.
pub(crate) fn mib(bytes: usize) -> String {
    let mib = bytes as f64 / f64::from(1 << 20);
    if mib.fract() == 0.0 { format!("{mib:.0} MiB") } else { format!("{mib:.1} MiB") }
}

/// The key of `slot` in a key table.
fn key_of<'a>(slots: &[(KeyGroup, u32, u32)], keys: &'a [u8], slot: u32) -> &'a [u8] {
    let (_, start, end) = slots[slot as usize];
    &keys[start as usize..end as usize]
}

/// Keyed state of one operator subtask, and the key table of the batch being processed.
pub(crate) struct KeyedState {
    pub(crate) backend: Box<dyn StateBackend>,
    /// The kinds of the states in the backend: the operator's own, then the host's (timers).
    pub(crate) kinds: Vec<StateKind>,
    /// How many of them the operator declared, and may reach.
    pub(crate) guest_states: u32,
    /// Its timers, for an operator that can set them (keyed, contract 0.3.0).
    pub(crate) timers: Option<TimerQueue>,
    /// Per state, its time-to-live in milliseconds, if it has one (see [`crate::state::ttl`]).
    pub(crate) ttl: Vec<Option<u64>>,
    /// Per slot: key group, and the key's byte range in `keys`.
    pub(crate) slots: Vec<(KeyGroup, u32, u32)>,
    pub(crate) keys: Vec<u8>,
    /// The slots by their key's hash, to find a key already in the table. A table of 4-byte
    /// slots, kept from batch to batch, stays in L1; a map of (key, slot) made per batch was 48
    /// KiB of new memory for every 1,024 events, and a tenth of the frame's encoding time.
    index: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// The most bytes of state the backend may hold (`state-limit`), when it counts them.
    pub(crate) limit: usize,
    /// Its broadcast state (0.4.0), and whether the call in progress may write it: only while
    /// it processes a broadcast input, which every subtask reads alike.
    pub(crate) broadcast: BroadcastState,
    pub(crate) broadcast_writable: bool,
    /// While set, what the call in progress changes through the `state` imports is recorded, so
    /// that a failed call can be taken back (see [`super::quarantine`]).
    pub(crate) undo: Option<UndoLog>,
    /// Set when the host itself failed during a call (its state backend, the state limit): a
    /// failure of the job, never of the events in the call.
    pub(crate) host_fault: Option<String>,
}

impl KeyedState {
    /// Keyed state in `backend`, of the operator's states of `kinds` and none of the host's.
    pub(crate) fn new(backend: Box<dyn StateBackend>, kinds: Vec<StateKind>) -> Self {
        let (guest_states, kinds_len) = (kinds.len() as u32, kinds.len());
        KeyedState {
            backend,
            kinds,
            guest_states,
            timers: None,
            ttl: vec![None; kinds_len],
            slots: Vec::new(),
            keys: Vec::new(),
            index: hashbrown::HashTable::new(),
            hasher: Default::default(),
            limit: usize::MAX,
            broadcast: BroadcastState::default(),
            broadcast_writable: false,
            undo: None,
            host_fault: None,
        }
    }

    /// No state yet, of the states of `kinds`: an instance's before it takes its subtask's over
    /// (it may first migrate it, or be a replacement, see [`super::instance`]).
    pub(crate) fn empty(kinds: Vec<StateKind>) -> Self {
        KeyedState::new(Box::new(MemoryBackend::new(0..0, &kinds)), kinds)
    }

    /// Empties the key table for a frame of at most `keys` distinct keys.
    pub(crate) fn clear_key_table(&mut self, keys: usize) {
        self.slots.clear();
        self.keys.clear();
        self.index.clear();
        let (slots, all_keys, hasher) = (&self.slots, &self.keys, &self.hasher);
        self.index.reserve(keys, |&s| hasher.hash_one(key_of(slots, all_keys, s)));
    }

    /// The slot of `key` in the key table, added with key group `kg()` when it is new.
    pub(crate) fn slot_of(&mut self, key: &[u8], kg: impl FnOnce() -> KeyGroup) -> u32 {
        let hash = self.hasher.hash_one(key);
        let (slots, keys, hasher) = (&mut self.slots, &mut self.keys, &self.hasher);
        if let Some(&slot) = self.index.find(hash, |&s| same_bytes(key_of(slots, keys, s), key)) {
            return slot;
        }
        let start = keys.len() as u32;
        keys.extend_from_slice(key);
        slots.push((kg(), start, keys.len() as u32));
        let slot = slots.len() as u32 - 1;
        self.index.insert_unique(hash, slot, |&s| hasher.hash_one(key_of(slots, keys, s)));
        slot
    }

    /// Fails once the state holds more than `state-limit`: a guest must not be able to exhaust
    /// the host's memory through host-owned state.
    /// Its pending timers count too: with either backend the host keeps their queue in memory.
    pub(crate) fn check_limit(&self) -> Result<(), String> {
        let timers = self.timers.as_ref().map_or(0, TimerQueue::approximate_bytes);
        let bytes = self.backend.approximate_bytes().unwrap_or(0) + timers;
        if bytes <= self.limit {
            return Ok(());
        }
        let pending = self.timers.as_ref().map_or(0, TimerQueue::len);
        Err(format!(
            "its keyed state grew past `state-limit` ({}): this subtask holds about {} in memory ({} of it the \
             queue of its {pending} pending timers); raise `state-limit`, or keep less state or fewer timers per key",
            bytesize::ByteSize(self.limit as u64),
            bytesize::ByteSize(bytes as u64),
            bytesize::ByteSize(timers as u64)
        ))
    }

    /// State `state`'s time-to-live, if it has one.
    pub(crate) fn ttl_of(&self, state: u32) -> Option<u64> {
        self.ttl.get(state as usize).copied().flatten()
    }

    /// Hints the backend to load the value states of the batch's keys in `slots` (those beyond
    /// the batch's are none).
    pub(crate) fn prefetch_values(&self, value_states: &[u32], slots: std::ops::Range<usize>) {
        let slots = slots.start.min(self.slots.len())..slots.end.min(self.slots.len());
        for &(kg, start, end) in &self.slots[slots] {
            for &state in value_states {
                self.backend.value_prefetch(state, kg, &self.keys[start as usize..end as usize]);
            }
        }
    }

    /// Runs `f` on the backend with the key group and key of `slot`, after checking that `state`
    /// is a declared state of `kind` (any kind when `None`).
    fn with_key<T>(
        &mut self,
        slot: u32,
        state: u32,
        kind: Option<StateKind>,
        f: impl FnOnce(&mut dyn StateBackend, Option<&mut UndoLog>, KeyGroup, &[u8]) -> Result<T, StateError>,
    ) -> wasmtime::Result<T> {
        let Some(&(kg, start, end)) = self.slots.get(slot as usize) else {
            return Err(format_err!("the guest used state slot {slot}, but the batch has {} keys", self.slots.len()));
        };
        let declared = self.kinds.get(state as usize).filter(|_| state < self.guest_states);
        match (declared, kind) {
            (Some(_), None) => {}
            (Some(&k), Some(kind)) if k == kind => {}
            (Some(k), Some(kind)) => {
                return Err(format_err!("the guest used state #{state} ({k:?} state) as {kind:?} state"));
            }
            (None, _) => {
                return Err(format_err!("the guest used state #{state}, but it declares {} states", self.guest_states));
            }
        }
        let result = f(&mut *self.backend, self.undo.as_mut(), kg, &self.keys[start as usize..end as usize]);
        result.map_err(|e| self.fault(format!("state backend: {e}")))
    }

    /// The error of a call in which the host failed (see `host_fault`).
    fn fault(&mut self, message: String) -> wasmtime::Error {
        self.host_fault = Some(message.clone());
        format_err!("{message}")
    }

    /// Fails the call, as the host's fault, past the state limit.
    fn check_limit_in_call(&mut self) -> wasmtime::Result<()> {
        self.check_limit().map_err(|e| self.fault(e))
    }
}

/// Everything a Wasm operator instance's store holds.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: MemoryLimit,
    pub(crate) keyed: KeyedState,
    /// "'uid' subtask i/p", for log lines.
    pub(crate) subtask: Arc<str>,
    /// The deadline of the guest call in progress, which WASI waits end at.
    pub(crate) call_deadline: Option<super::wasi::CallDeadline>,
    /// Raised when the subtask must stop: guest calls end at once.
    pub(crate) interrupt: crate::runtime::Interrupt,
    /// What the guest wrote to its stdout and stderr lately, for a failure's cause.
    pub(crate) output: super::guest_output::GuestOutput,
}

impl HostState {
    pub(crate) fn new(keyed: KeyedState, memory_limit: usize, subtask: Arc<str>) -> Self {
        // No preopened directories, environment, arguments, network or stdin: guest stdout and
        // stderr are logged, and their last lines kept for a failure's cause.
        let output = super::guest_output::GuestOutput::new(subtask.clone());
        let wasi = WasiCtx::builder().stdout(output.clone()).stderr(output.clone()).build();
        let limits = MemoryLimit { bytes: memory_limit, largest: 0 };
        let interrupt = Default::default();
        HostState { wasi, table: ResourceTable::new(), limits, keyed, subtask, call_deadline: None, interrupt, output }
    }

    /// The resources WASI hands the guest.
    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// A state for calling `describe` on a fresh instance: no keyed state.
    pub(crate) fn for_describe() -> Self {
        HostState::new(KeyedState::empty(Vec::new()), 256 << 20, Arc::from("describe"))
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Adds the imports of every served contract version (their interfaces have different names, so
/// one linker serves modules of any).
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    bindings::v4::OperatorWorld::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    bindings::v3::OperatorWorld::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    bindings::v2::OperatorWorld::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

/// The `state` functions, for every contract version (their signatures are the same).
impl KeyedState {
    fn map_get(&mut self, slot: u32, state: u32, map_key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        let ttl = self.ttl_of(state);
        self.with_key(slot, state, Some(StateKind::Map), |b, _, kg, key| {
            let mut out = Vec::new();
            if !b.map_get(state, kg, key, &map_key, &mut out)? {
                return Ok(None);
            }
            Ok(match ttl {
                None => Some(out),
                Some(_) => ttl::unwrap(&out, ttl::now_ms()).map(<[u8]>::to_vec),
            })
        })
    }

    fn map_put(&mut self, slot: u32, state: u32, map_key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        let value = self.stored(state, value);
        self.with_key(slot, state, Some(StateKind::Map), |b, undo, kg, key| {
            if let Some(undo) = undo {
                undo.map_entry(b, (state, kg, key), &map_key)?;
            }
            b.map_put(state, kg, key, &map_key, &value)
        })?;
        self.check_limit_in_call()
    }

    /// What is stored for `value` of state `state`: with its expiry when it has a time-to-live.
    fn stored(&self, state: u32, value: Vec<u8>) -> Vec<u8> {
        match self.ttl_of(state) {
            Some(time_to_live) => {
                let mut stored = Vec::with_capacity(value.len() + ttl::EXPIRY_BYTES);
                ttl::wrap(time_to_live, ttl::now_ms(), &value, &mut stored);
                stored
            }
            None => value,
        }
    }

    fn map_remove(&mut self, slot: u32, state: u32, map_key: Vec<u8>) -> wasmtime::Result<()> {
        self.with_key(slot, state, Some(StateKind::Map), |b, undo, kg, key| {
            if let Some(undo) = undo {
                undo.map_entry(b, (state, kg, key), &map_key)?;
            }
            b.map_remove(state, kg, key, &map_key)
        })
    }

    fn map_entries(&mut self, slot: u32, state: u32) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let live = self.live(state);
        self.with_key(slot, state, Some(StateKind::Map), |b, _, kg, key| {
            let mut entries = Vec::new();
            b.map_entries(state, kg, key, &mut |k, v| {
                if let Some(v) = live(v) {
                    entries.push((k.to_vec(), v.to_vec()));
                }
            })?;
            Ok(entries)
        })
    }

    fn list_get(&mut self, slot: u32, state: u32) -> wasmtime::Result<Vec<Vec<u8>>> {
        let live = self.live(state);
        self.with_key(slot, state, Some(StateKind::List), |b, _, kg, key| {
            let mut items = Vec::new();
            b.list_get(state, kg, key, &mut |v| items.extend(live(v).map(<[u8]>::to_vec)))?;
            Ok(items)
        })
    }

    /// The operator's bytes of a stored entry of state `state`: none when it has expired.
    fn live(&self, state: u32) -> impl Fn(&[u8]) -> Option<&[u8]> + use<> {
        let (ttl, now) = (self.ttl_of(state), ttl::now_ms());
        move |stored| if ttl.is_some() { ttl::unwrap(stored, now) } else { Some(stored) }
    }

    fn list_append(&mut self, slot: u32, state: u32, value: Vec<u8>) -> wasmtime::Result<()> {
        let value = self.stored(state, value);
        self.with_key(slot, state, Some(StateKind::List), |b, undo, kg, key| {
            if let Some(undo) = undo {
                undo.list(b, (state, kg, key))?;
            }
            b.list_append(state, kg, key, &value)
        })?;
        self.check_limit_in_call()
    }

    fn clear(&mut self, slot: u32, state: u32) -> wasmtime::Result<()> {
        let kind = self.kinds.get(state as usize).copied().unwrap_or(StateKind::Value);
        self.with_key(slot, state, None, |b, undo, kg, key| {
            if let Some(undo) = undo {
                undo.clear(b, kind, (state, kg, key))?;
            }
            b.clear(state, kg, key)
        })
    }

    /// Fails unless the call in progress processes a broadcast input (see `broadcast-put`).
    fn check_broadcast_writable(&self, state: u32) -> wasmtime::Result<()> {
        if self.broadcast_writable {
            return Ok(());
        }
        Err(format_err!(
            "the guest wrote broadcast state #{state} while processing an input that is not broadcast (or a \
             timer); broadcast state is written only from a broadcast input, which every subtask reads alike, \
             so that every subtask's copy stays the same"
        ))
    }

    fn broadcast_get(&mut self, state: u32, map_key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.broadcast.get(state, &map_key).map_err(|e| format_err!("{e}"))?.map(<[u8]>::to_vec))
    }

    fn broadcast_entries(&mut self, state: u32) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let entries = self.broadcast.entries(state).map_err(|e| format_err!("{e}"))?;
        Ok(entries.map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
    }

    fn broadcast_put(&mut self, state: u32, map_key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.check_broadcast_writable(state)?;
        if let Some(undo) = &mut self.undo {
            undo.broadcast(&self.broadcast, state, &map_key).map_err(|e| format_err!("{e}"))?;
        }
        self.broadcast.put(state, map_key, value).map_err(|e| format_err!("{e}"))
    }

    fn broadcast_remove(&mut self, state: u32, map_key: Vec<u8>) -> wasmtime::Result<()> {
        self.check_broadcast_writable(state)?;
        if let Some(undo) = &mut self.undo {
            undo.broadcast(&self.broadcast, state, &map_key).map_err(|e| format_err!("{e}"))?;
        }
        self.broadcast.remove(state, &map_key).map_err(|e| format_err!("{e}"))
    }
}

impl HostState {
    fn log(&self, level: tracing::Level, message: &str) {
        let subtask = &*self.subtask;
        let message = crate::runtime::clip(message);
        match level {
            tracing::Level::TRACE => tracing::trace!(target: "weir::guest", %subtask, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(target: "weir::guest", %subtask, "{message}"),
            tracing::Level::INFO => tracing::info!(target: "weir::guest", %subtask, "{message}"),
            tracing::Level::WARN => tracing::warn!(target: "weir::guest", %subtask, "{message}"),
            tracing::Level::ERROR => tracing::error!(target: "weir::guest", %subtask, "{message}"),
        }
    }
}

/// The `types`, `state` and `log` imports of contract version `$v` (a module of `bindings`);
/// `$more` adds the functions later versions have.
macro_rules! imports {
    ($v:ident $(, $more:item)*) => {
        impl bindings::$v::weir::operator::types::Host for HostState {}

        impl bindings::$v::weir::operator::state::Host for HostState {
            fn map_get(&mut self, slot: u32, state: u32, map_key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
                self.keyed.map_get(slot, state, map_key)
            }
            fn map_put(&mut self, slot: u32, state: u32, map_key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
                self.keyed.map_put(slot, state, map_key, value)
            }
            fn map_remove(&mut self, slot: u32, state: u32, map_key: Vec<u8>) -> wasmtime::Result<()> {
                self.keyed.map_remove(slot, state, map_key)
            }
            fn map_entries(&mut self, slot: u32, state: u32) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
                self.keyed.map_entries(slot, state)
            }
            fn list_get(&mut self, slot: u32, state: u32) -> wasmtime::Result<Vec<Vec<u8>>> {
                self.keyed.list_get(slot, state)
            }
            fn list_append(&mut self, slot: u32, state: u32, value: Vec<u8>) -> wasmtime::Result<()> {
                self.keyed.list_append(slot, state, value)
            }
            fn clear(&mut self, slot: u32, state: u32) -> wasmtime::Result<()> {
                self.keyed.clear(slot, state)
            }
            $($more)*
        }

        impl bindings::$v::weir::operator::log::Host for HostState {
            fn log(
                &mut self,
                level: bindings::$v::weir::operator::types::Level,
                message: String,
            ) -> wasmtime::Result<()> {
                use bindings::$v::weir::operator::types::Level;
                let level = match level {
                    Level::Trace => tracing::Level::TRACE,
                    Level::Debug => tracing::Level::DEBUG,
                    Level::Info => tracing::Level::INFO,
                    Level::Warn => tracing::Level::WARN,
                    Level::Error => tracing::Level::ERROR,
                };
                HostState::log(self, level, &message);
                Ok(())
            }
        }
    };
}

imports!(v2);
imports!(v3);
imports!(
    v4,
    fn broadcast_get(&mut self, state: u32, map_key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.keyed.broadcast_get(state, map_key)
    },
    fn broadcast_entries(&mut self, state: u32) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.keyed.broadcast_entries(state)
    },
    fn broadcast_put(&mut self, state: u32, map_key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.keyed.broadcast_put(state, map_key, value)
    },
    fn broadcast_remove(&mut self, state: u32, map_key: Vec<u8>) -> wasmtime::Result<()> {
        self.keyed.broadcast_remove(state, map_key)
    }
);
