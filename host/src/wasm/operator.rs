//! A Wasm operator subtask: one store and instance per subtask, one guest call per batch, with a
//! deadline on every call and a memory limit on the instance.
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, Trap, WasmBacktrace};

use weir_frame::{NO_WATERMARK, TimeDomain};

use super::engine::{EPOCH_TICK, OperatorModule};
use super::frame::{self, FrameTime, OutputShape};
use super::guest::Guest;
use super::guest_output::{self, GuestOutput};
use super::host::{HostState, KeyedState};
use super::instance::{self, GuestCall, GuestInstance};
use super::quarantine::Quarantine;
use super::undo::UndoLog;
use crate::key_group::key_group_range;
use crate::runtime::{
    BATCH_BYTES, BATCH_SIZE, Emitted, Event, EventBatch, ForkedState, HandedOverState, Operator, OperatorFactory,
    SnapshotPart, StateSnapshot, SubtaskInfo, clip,
};
use crate::state::broadcast::{BroadcastState, SavedBroadcast};
use crate::state::{
    self, Backends, Migration, StateBackend, StateDescriptor, StateKind, StateRestore, Timer, TimerQueue, ttl,
};

/// Limits of the sandbox each instance runs in.
#[derive(Debug, Clone, Copy)]
pub struct SandboxLimits {
    /// Longest a single guest call (`open`, or one batch) may run.
    pub call_deadline: Duration,
    /// Most linear memory an instance may have.
    pub memory_limit: usize,
    /// Most bytes of keyed state a subtask may keep in host memory.
    pub state_limit: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits { call_deadline: Duration::from_secs(10), memory_limit: 256 << 20, state_limit: 1 << 30 }
    }
}

/// How often, in epoch ticks, a running guest is checked against its call deadline and its
/// subtask's interrupt (50 ms).
const CHECK_EVERY: u64 = 5;

/// Makes `store` stop the guest at its call's deadline, or soon after its subtask is interrupted
/// (a cancelled job does not wait for its guests' deadlines).
pub(crate) fn watch(store: &mut Store<HostState>) {
    store.epoch_deadline_callback(|ctx| {
        let state = ctx.data();
        let due = state.call_deadline.is_none_or(|d| std::time::Instant::now() >= d.at);
        Ok(match due || state.interrupt.is_raised() {
            true => wasmtime::UpdateDeadline::Interrupt,
            false => wasmtime::UpdateDeadline::Continue(CHECK_EVERY),
        })
    });
}

/// Arms `store` (see [`watch`]) for one guest call of at most `limit`: the Wasm it runs is
/// checked every few epoch ticks, and its WASI waits end at the deadline (see [`super::wasi`]).
pub(crate) fn arm(store: &mut Store<HostState>, limit: Duration) {
    store.set_epoch_deadline(ticks(limit).min(CHECK_EVERY));
    store.data_mut().call_deadline = Some(super::wasi::CallDeadline::starting_now(limit));
}

/// Epoch ticks for a deadline, at least one.
pub(crate) fn ticks(deadline: Duration) -> u64 {
    (deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1)
}

/// Creates the subtasks of one Wasm operator.
pub struct WasmOperatorFactory {
    module: Arc<OperatorModule>,
    config: String,
    keyed: bool,
    limits: SandboxLimits,
    restore: Option<StateRestore>,
    backends: Backends,
    /// Per input, in the job file's order: whether it is read by broadcast (its events reach the
    /// guest without a key, and may write broadcast state).
    broadcast_inputs: Vec<bool>,
    /// Set when it sets failing events aside instead of failing (`on-error = "quarantine"`).
    quarantine: Option<Arc<Quarantine>>,
}

impl WasmOperatorFactory {
    /// `config` is the operator's configuration as a JSON object; `keyed` is true when its input
    /// is partitioned by key (only then does it get keyed state, kept in `backends`).
    pub fn new(
        module: Arc<OperatorModule>,
        config: String,
        keyed: bool,
        limits: SandboxLimits,
        backends: Backends,
    ) -> Self {
        WasmOperatorFactory {
            module,
            config,
            keyed,
            limits,
            restore: None,
            backends,
            broadcast_inputs: Vec::new(),
            quarantine: None,
        }
    }

    /// Sets the events that make its guest calls fail aside, in `quarantine`.
    pub fn quarantining(mut self, quarantine: Option<Arc<Quarantine>>) -> Self {
        self.quarantine = quarantine;
        self
    }

    /// Which of its inputs, in order, are read by broadcast.
    pub fn reading_broadcast(mut self, broadcast_inputs: Vec<bool>) -> Self {
        self.broadcast_inputs = broadcast_inputs;
        self
    }

    /// Fills each subtask's state from a checkpoint before `open`.
    pub fn restoring(mut self, restore: StateRestore) -> Self {
        self.restore = Some(restore);
        self
    }

    /// Rewrites the restored entries of one state from the layout they were saved in through the
    /// guest's `migrate`, one key group per call.
    fn migrate(
        &self,
        store: &mut Store<HostState>,
        instance: &Guest,
        backend: &mut dyn StateBackend,
        key_groups: std::ops::Range<u32>,
        migration: Migration,
    ) -> Result<(), String> {
        let Migration { state, from_version } = migration;
        let name = &self.module.description.states[state as usize].name;
        let expires = self.module.description.states[state as usize].time_to_live.is_some();
        let failed = |e: String| format!("cannot migrate state '{name}' from schema version {from_version}: {e}");
        let started = std::time::Instant::now();
        let migrated = state::rewrite_items(backend, state, key_groups, &mut |items| {
            // Items with a time-to-live keep their expiry: the guest migrates what follows it.
            let split = if expires { ttl::EXPIRY_BYTES } else { 0 };
            let (expiries, items): (Vec<Vec<u8>>, Vec<Vec<u8>>) = items
                .into_iter()
                .map(|item| {
                    let at = split.min(item.len());
                    (item[..at].to_vec(), item[at..].to_vec())
                })
                .unzip();
            let migrated = self.call_migrate(store, instance, migration, &items)?;
            Ok(expiries
                .into_iter()
                .zip(migrated)
                .map(|(mut stored, item)| {
                    stored.extend_from_slice(&item);
                    stored
                })
                .collect())
        })
        .map_err(failed)?;
        tracing::info!(
            "migrated {migrated} items of state '{name}' from schema version {from_version} in {:?}",
            started.elapsed()
        );
        Ok(())
    }

    /// The guest's `migrate` of `items` of a state saved under an older schema version, under
    /// the call deadline.
    fn call_migrate(
        &self,
        store: &mut Store<HostState>,
        instance: &Guest,
        Migration { state, from_version }: Migration,
        items: &[Vec<u8>],
    ) -> Result<Vec<Vec<u8>>, String> {
        arm(store, self.limits.call_deadline);
        instance
            .migrate(&mut *store, state, from_version, items)
            .map_err(|e| call_error("migrate", &e, &self.limits, &store.data().output))?
    }
}

impl OperatorFactory for WasmOperatorFactory {
    fn create(&self, info: &SubtaskInfo) -> Result<Box<dyn Operator>, String> {
        let key_groups =
            if self.keyed { key_group_range(info.max_parallelism, info.parallelism, info.index) } else { 0..0 };
        Ok(Box::new(self.open(info, key_groups, None)?))
    }
}

impl WasmOperatorFactory {
    /// The module's code, for people.
    pub fn code(&self) -> String {
        let d = &self.module.description;
        format!("{} {} (sha256:{})", d.name, d.version, &self.module.sha256[..self.module.sha256.len().min(12)])
    }

    /// The module's SHA-256.
    pub fn sha256(&self) -> &str {
        &self.module.sha256
    }

    /// Opens subtask `info` over `key_groups` of its own (all of them, or a `part` of them: see
    /// [`crate::runtime::key_ranges`]).
    pub(crate) fn open(
        &self,
        info: &SubtaskInfo,
        key_groups: std::ops::Range<u32>,
        part: Option<SnapshotPart>,
    ) -> Result<WasmOperator, String> {
        let description = &self.module.description;
        // The declared states, then the host's timers when it can set them.
        let states = self.module.states(self.keyed);
        let kinds: Vec<StateKind> = states.iter().map(|s| s.kind).collect();
        // The instance runs any migration of the restored state, so it comes first, with no state.
        let (mut store, instance) =
            instance::instantiate(&self.module, KeyedState::empty(kinds.clone()), &self.limits, info)?;
        // An operator without state needs no database.
        let memory = Backends::Memory;
        let backends = if kinds.is_empty() { &memory } else { &self.backends };
        let (backend, handed_over_timers, broadcast) = match &self.restore {
            None => (backends.open(key_groups.clone(), &kinds)?, None, BroadcastState::new(&states)),
            Some(restore) => {
                let restored = restore(backends, &kinds, key_groups.clone(), info.index)
                    .map_err(|e| format!("cannot restore its state: {e}"))?;
                let migrations = restored.migrations(&states).map_err(|e| format!("cannot restore its state: {e}"))?;
                let mut backend = restored.backend;
                // Migrations rewrite values of the operator's own keyed states, never the timers;
                // broadcast state migrates where it is restored.
                let keyed_migrations =
                    migrations.into_iter().filter(|m| kinds[m.state as usize] != StateKind::Broadcast);
                for migration in keyed_migrations {
                    self.migrate(&mut store, &instance, &mut *backend, key_groups.clone(), migration)?;
                }
                let broadcast =
                    BroadcastState::restore_migrated(&states, restored.broadcast.as_ref(), |migration, items| {
                        self.call_migrate(&mut store, &instance, migration, items)
                    })?;
                (backend, restored.timers, broadcast)
            }
        };
        let mut keyed = KeyedState::new(backend, kinds.clone());
        keyed.broadcast = broadcast;
        keyed.guest_states = description.states.len() as u32;
        keyed.ttl = states.iter().map(|s| s.time_to_live).collect();
        keyed.limit = self.limits.state_limit;
        if states.len() > description.states.len() {
            let timers = match handed_over_timers {
                Some(timers) => timers,
                // A backend on disk keeps most timers there (see `TimerQueue`).
                None => TimerQueue::restore(
                    &*keyed.backend,
                    keyed.guest_states,
                    key_groups.clone(),
                    keyed.backend.approximate_bytes().is_none().then_some(crate::state::SPILL_AFTER),
                )
                .map_err(|e| format!("cannot restore its timers: {e}"))?,
            };
            keyed.timers = Some(timers);
        }
        store.data_mut().keyed = keyed;
        let guest = GuestInstance::open(
            self.module.clone(),
            (store, instance),
            self.config.clone(),
            self.limits,
            info.clone(),
        )?;
        let value_states = (0..kinds.len() as u32).filter(|&i| kinds[i as usize] == StateKind::Value).collect();
        Ok(WasmOperator {
            key_groups,
            part,
            states,
            guest,
            time: self.module.has_timers().then_some(FrameTime { watermark: NO_WATERMARK, now: 0 }),
            value_states,
            max_parallelism: self.keyed.then_some(info.max_parallelism),
            output: OutputShape {
                timers: self.module.has_timers(),
                side_outputs: self.module.has_graph_inputs().then_some(description.side_outputs.len()),
            },
            broadcast_inputs: self.broadcast_inputs.clone(),
            quarantine: self.quarantine.clone(),
            frame: Vec::new(),
            event_slots: Vec::new(),
            due: Vec::new(),
            firing: None,
            batches: 0,
            swept: 0,
            pieces: Vec::new(),
        })
    }
}

/// One guest call for some of a batch's events or due timers (their indices), under quarantine.
type GuestCallOf<'a> = dyn FnMut(&mut WasmOperator, std::ops::Range<usize>, &mut Emitted) -> Result<(), String> + 'a;
/// Records the event or timer of an index on the quarantine side output, with its error.
type SetAside<'a> = dyn FnMut(&mut WasmOperator, usize, &str, &mut Emitted) + 'a;

/// An entry of a key's state as stored: its state's index, map key (map states and timers) and
/// bytes.
pub(crate) type StoredEntry = (u32, Option<Vec<u8>>, Vec<u8>);

/// A Wasm operator subtask (or a part of one's key groups).
pub(crate) struct WasmOperator {
    /// The key groups this subtask owns (none when its input is not keyed).
    key_groups: std::ops::Range<u32>,
    /// Set when it serves a part of its subtask's key groups: its snapshots say so.
    part: Option<SnapshotPart>,
    /// Its states, as snapshots record them: the declared ones, then the host's timers if any.
    states: Vec<StateDescriptor>,
    guest: GuestInstance,
    /// What the frames say of time (a 0.3.0 guest; none for 0.2.0).
    time: Option<FrameTime>,
    /// Indices of the declared value states, in the frames' order.
    value_states: Vec<u32>,
    /// Set for a keyed operator.
    max_parallelism: Option<u32>,
    /// What its output frames carry.
    output: OutputShape,
    /// Per input: whether it is read by broadcast (see [`WasmOperatorFactory::reading_broadcast`]).
    broadcast_inputs: Vec<bool>,
    /// Where failing events go (see [`WasmOperatorFactory::quarantining`]).
    quarantine: Option<Arc<Quarantine>>,
    /// The input frame and each event's slot, reused from batch to batch.
    frame: Vec<u8>,
    event_slots: Vec<u32>,
    /// The timers being fired, reused.
    due: Vec<(TimeDomain, Timer)>,
    /// Within an advance of time: the time it fires timers up to, the same for all its batches.
    firing: Option<FrameTime>,
    /// Batches processed, and how many key groups have been swept for expired entries.
    batches: u64,
    swept: u32,
    /// After a stop that split its state (a canary's step): the parts of its key groups past the
    /// first, each frozen apart, to hand over.
    pieces: Vec<(std::ops::Range<u32>, Box<dyn StateBackend>)>,
}

impl WasmOperator {
    /// Its states, as snapshots record them: the declared ones, then the host's timers if any.
    pub(crate) fn states(&self) -> &[StateDescriptor] {
        &self.states
    }

    /// The stored entries of `key`'s state (an expiry first where a state has a time-to-live), in
    /// its states' order: each state's index, map key (map states and timers) and bytes.
    pub(crate) fn entries_of(&self, key: &[u8]) -> Result<Vec<StoredEntry>, String> {
        let mut entries = Vec::new();
        let backend = &self.guest.store.data().keyed.backend;
        backend
            .scan(self.key_groups.clone(), &mut |entry| {
                if entry.key != key {
                    return;
                }
                let (map_key, bytes) = match entry.item {
                    state::StateItem::Value(v) | state::StateItem::ListElement(v) => (None, v),
                    state::StateItem::MapEntry(k, v) => (Some(k.to_vec()), v),
                };
                entries.push((entry.state, map_key, bytes.to_vec()));
            })
            .map_err(|e| format!("state backend: {e}"))?;
        entries.sort_by_key(|(state, _, _)| *state);
        Ok(entries)
    }

    /// What a snapshot records of its broadcast state: subtask 0's copy stands for every
    /// subtask's, which are the same.
    fn saved_broadcast(&self) -> Option<SavedBroadcast> {
        (self.guest.info.index == 0).then(|| self.guest.store.data().keyed.broadcast.save(&self.states)).flatten()
    }

    /// The snapshot of its key groups whose state `body` holds.
    fn snapshot_of(&self, body: Box<dyn state::SnapshotBody>) -> StateSnapshot {
        let (key_groups, broadcast, part) = (self.key_groups.clone(), self.saved_broadcast(), self.part.clone());
        StateSnapshot { key_groups, body, broadcast, part }
    }
}

/// Batches between two sweeps of a key group for expired entries.
const SWEEP_EVERY: u64 = 16;

impl WasmOperator {
    /// Processes the events `events` of `batch`, from its input `input`: one guest call, or with
    /// quarantine, as many as it takes to set the events that fail aside.
    fn process_events(
        &mut self,
        input: usize,
        batch: &EventBatch,
        events: std::ops::Range<usize>,
        out: &mut Emitted,
    ) -> Result<(), String> {
        let Some(quarantine) = self.quarantine.clone() else { return self.call_events(input, batch, events, out) };
        let call = &mut |op: &mut Self, events, out: &mut Emitted| op.call_events(input, batch, events, out);
        let set_aside = &mut |op: &mut Self, i: usize, error: &str, out: &mut Emitted| {
            let event = batch.get(i);
            let record = quarantine.record(&event, error, op.guest.sha256(), op.guest.info.index);
            out.to(quarantine.output).push(Event { key: event.key, value: &record, timestamp: event.timestamp });
        };
        self.quarantining(&quarantine, ("events", events), call, set_aside, out)
    }

    /// Calls `call` with `items` (indices of events or timers, which `what` names); when the call
    /// fails, takes it back and calls it again with each half, down to single items, which
    /// `set_aside` records on the quarantine side output (see [`super::quarantine`]). Logs how
    /// long a call that set items aside took.
    fn quarantining(
        &mut self,
        quarantine: &Quarantine,
        (what, items): (&str, std::ops::Range<usize>),
        call: &mut GuestCallOf<'_>,
        set_aside: &mut SetAside<'_>,
        out: &mut Emitted,
    ) -> Result<(), String> {
        let (started, before, count) = (std::time::Instant::now(), out.quarantined, items.len());
        self.isolating(quarantine, items, call, set_aside, out)?;
        if out.quarantined > before {
            tracing::warn!(
                "{}: set {} of {count} {what} aside in {:.1} ms",
                self.guest.info,
                out.quarantined - before,
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        Ok(())
    }

    /// See [`WasmOperator::quarantining`].
    fn isolating(
        &mut self,
        quarantine: &Quarantine,
        items: std::ops::Range<usize>,
        call: &mut GuestCallOf<'_>,
        set_aside: &mut SetAside<'_>,
        out: &mut Emitted,
    ) -> Result<(), String> {
        let keyed = self.guest.keyed();
        (keyed.undo, keyed.host_fault) = (Some(UndoLog::default()), None);
        let called = call(self, items.clone(), out);
        let keyed = self.guest.keyed();
        let undo = keyed.undo.take().unwrap_or_default();
        let Err(error) = called else { return Ok(()) };
        if keyed.host_fault.take().is_some() {
            return Err(error);
        }
        // The call changed nothing, then: its state writes are taken back, and it emitted
        // nothing (`frame::apply_output`). A failed instance cannot be entered again.
        undo.undo(&mut *keyed.backend, &mut keyed.broadcast)?;
        self.guest.renew()?;
        if items.len() > 1 {
            let middle = items.start + items.len() / 2;
            self.isolating(quarantine, items.start..middle, call, set_aside, out)?;
            return self.isolating(quarantine, middle..items.end, call, set_aside, out);
        }
        quarantine.admit(&error)?;
        tracing::warn!("{}: set aside on its quarantine side output: {error}", self.guest.info);
        set_aside(self, items.start, &error, out);
        out.quarantined += 1;
        Ok(())
    }

    /// One guest call for the events `events` of `batch`, from its input `input`. Events of a
    /// broadcast input reach it without a key (every subtask gets them all), and only then may it
    /// write its broadcast state.
    fn call_events(
        &mut self,
        input: usize,
        batch: &EventBatch,
        events: std::ops::Range<usize>,
        out: &mut Emitted,
    ) -> Result<(), String> {
        let time = self.time.map(|t| FrameTime { now: ttl::now_ms(), ..t });
        let count = events.len();
        let broadcast = self.broadcast_inputs.get(input).copied().unwrap_or(false);
        let keyed = self.guest.keyed();
        frame::encode_input(
            batch,
            events,
            self.output.side_outputs.map(|_| input as u8),
            keyed,
            &self.value_states,
            self.max_parallelism.filter(|_| !broadcast),
            time,
            &mut self.frame,
            &mut self.event_slots,
        )?;
        keyed.broadcast_writable = broadcast;
        let _batch = tracing::trace_span!("batch", events = count).entered();
        let output = self.guest.call(GuestCall::ProcessBatch, &self.frame);
        self.guest.keyed().broadcast_writable = false;
        frame::apply_output(output?, self.guest.keyed(), &self.value_states, self.output, out)?;
        self.guest.renew_if_grown()
    }

    /// Every [`SWEEP_EVERY`] batches, deletes the expired entries of the next of its key groups
    /// (state with a time-to-live is cleaned up as it goes, not only when read or snapshotted).
    fn sweep(&mut self) -> Result<(), String> {
        self.batches += 1;
        let keyed = self.guest.keyed();
        let expiring = keyed.ttl.iter().any(Option::is_some);
        if !expiring || self.key_groups.is_empty() || !self.batches.is_multiple_of(SWEEP_EVERY) {
            return Ok(());
        }
        let kg = self.key_groups.start + self.swept % self.key_groups.len() as u32;
        self.swept = self.swept.wrapping_add(1);
        ttl::sweep(&mut *keyed.backend, &keyed.ttl, kg..kg + 1, ttl::now_ms())
            .map(drop)
            .map_err(|e| format!("state backend: {e}"))
    }

    /// Fires a batch of the timers due at `time` (event time up to its watermark, processing time
    /// up to its now); true when it fired some, and the caller is to call again. The first call
    /// of an advance of time fixes its time, and timers the guest sets meanwhile for a time it
    /// reaches wait for the next advance (`TimerQueue::begin_advance`): an advance ends, whatever
    /// the guest does.
    fn fire_timers(&mut self, time: FrameTime, out: &mut Emitted) -> Result<bool, String> {
        let keyed = self.guest.keyed();
        let Some(timers) = keyed.timers.as_mut() else { return Ok(false) };
        let time = *self.firing.get_or_insert_with(|| {
            timers.begin_advance(time.watermark, time.now);
            time
        });
        for (domain, until) in [(TimeDomain::EventTime, time.watermark), (TimeDomain::ProcessingTime, time.now)] {
            timers
                .take_due(&mut *keyed.backend, domain, until, BATCH_SIZE, &mut self.due)
                .map_err(|e| format!("state backend: {e}"))?;
        }
        if self.due.is_empty() {
            timers.end_advance();
            self.firing = None;
            return Ok(false);
        }
        let due = std::mem::take(&mut self.due);
        let fired = match self.quarantine.clone() {
            None => self.call_timers(&due, time, out),
            Some(quarantine) => {
                let call = &mut |op: &mut Self, timers: std::ops::Range<usize>, out: &mut Emitted| {
                    op.call_timers(&due[timers], time, out)
                };
                let set_aside = &mut |op: &mut Self, i: usize, error: &str, out: &mut Emitted| {
                    let (domain, timer) = &due[i];
                    let record = quarantine.timer_record(*domain, timer, error, op.guest.sha256(), op.guest.info.index);
                    out.to(quarantine.output).push(Event { key: Some(&timer.key), value: &record, timestamp: None });
                };
                self.quarantining(&quarantine, ("timers", 0..due.len()), call, set_aside, out)
            }
        };
        self.due = due;
        self.due.clear();
        fired.map(|()| true)
    }

    /// One guest call firing the timers `due` at `time`.
    fn call_timers(&mut self, due: &[(TimeDomain, Timer)], time: FrameTime, out: &mut Emitted) -> Result<(), String> {
        frame::encode_timers(due, self.guest.keyed(), &self.value_states, time, &mut self.frame)?;
        let _timers = tracing::trace_span!("timers", timers = due.len()).entered();
        let output = self.guest.call(GuestCall::OnTimers, &self.frame)?;
        frame::apply_output(output, self.guest.keyed(), &self.value_states, self.output, out)?;
        self.guest.renew_if_grown()
    }
}

impl Operator for WasmOperator {
    fn advance_time(&mut self, watermark: i64, out: &mut Emitted) -> Result<bool, String> {
        let Some(time) = &mut self.time else { return Ok(false) };
        time.watermark = watermark;
        let time = FrameTime { now: ttl::now_ms(), ..*time };
        self.fire_timers(time, out)
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.guest.store.data().keyed.timers.as_ref()?.next(TimeDomain::ProcessingTime)
    }

    fn process(&mut self, input: usize, batch: &EventBatch, out: &mut Emitted) -> Result<(), String> {
        let keyed = self.guest.keyed();
        state::settle(&mut keyed.backend).map_err(|e| format!("cannot settle its state: {e}"))?;
        self.sweep()?;
        if batch.byte_len() <= BATCH_BYTES {
            return self.process_events(input, batch, 0..batch.len(), out);
        }
        // A batch of large events (an upstream operator's output) goes to the guest in parts of
        // about BATCH_BYTES: what one call takes and returns stays bounded.
        let mut start = 0;
        while start < batch.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < batch.len() && (end == start || bytes < BATCH_BYTES) {
                let event = batch.get(end);
                bytes += event.value.len() + event.key.map_or(0, <[u8]>::len);
                end += 1;
            }
            self.process_events(input, batch, start..end, out)?;
            start = end;
        }
        Ok(())
    }

    fn into_state(self: Box<Self>) -> Vec<HandedOverState> {
        let keyed = self.guest.store.into_data().keyed;
        let broadcast = keyed.broadcast.save(&self.states);
        // A split state's timers are found again in each part.
        let (timers, split) = (keyed.timers, !self.pieces.is_empty());
        let first_end = self.pieces.first().map_or(self.key_groups.end, |(range, _)| range.start);
        let first = HandedOverState {
            key_groups: self.key_groups.start..first_end,
            backend: keyed.backend,
            timers: timers.filter(|_| !split),
            broadcast,
        };
        let pieces = self.pieces.into_iter().map(|(key_groups, backend)| HandedOverState {
            key_groups,
            backend,
            timers: None,
            broadcast: None,
        });
        std::iter::once(first).chain(pieces).collect()
    }

    fn fork_state(&mut self) -> Result<ForkedState, String> {
        let kinds: Vec<StateKind> = self.states.iter().map(|s| s.kind).collect();
        let keyed = self.guest.keyed();
        let shadow = state::fork(&mut keyed.backend, self.key_groups.clone(), &kinds)
            .map_err(|e| format!("cannot fork its state: {e}"))?;
        let broadcast = keyed.broadcast.save(&self.states);
        let state = HandedOverState { key_groups: self.key_groups.clone(), backend: shadow, timers: None, broadcast };
        Ok(ForkedState { state, states: self.states.clone() })
    }

    fn memory_bytes(&self) -> u64 {
        let data = self.guest.store.data();
        let timers = data.keyed.timers.as_ref().map_or(0, TimerQueue::approximate_bytes);
        (data.keyed.backend.bytes_apart() + timers + data.limits.largest) as u64
    }

    fn freeze(&mut self, cuts: &[u32]) -> Result<Vec<StateSnapshot>, String> {
        if self.states.is_empty() {
            return Ok(Vec::new());
        }
        let keyed = self.guest.keyed();
        state::settle(&mut keyed.backend).map_err(|e| format!("cannot settle its state: {e}"))?;
        // Split where the next run's parts begin, from the last cut: each part is frozen and
        // handed over apart. A backend that cannot split is handed over whole; the next run's
        // parts then read theirs from the savepoint.
        let range = self.key_groups.clone();
        let mut cuts: Vec<u32> = cuts.iter().copied().filter(|c| *c > range.start && *c < range.end).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut end = range.end;
        for &cut in cuts.iter().rev() {
            let Some(piece) = keyed.backend.split_off(cut) else { break };
            self.pieces.insert(0, (cut..end, piece));
            end = cut;
        }
        let first = range.start..end;
        let body = state::freeze(&mut self.guest.keyed().backend, first.clone(), &self.states);
        let split = !self.pieces.is_empty();
        let tag = |snapshot: StateSnapshot| match split {
            true => StateSnapshot { part: Some(self.part.clone().unwrap_or_default()), ..snapshot },
            false => snapshot,
        };
        let mut snapshots = vec![tag(StateSnapshot { key_groups: first, ..self.snapshot_of(body) })];
        let part = self.part.clone().unwrap_or_default();
        for (key_groups, backend) in &mut self.pieces {
            let body = state::freeze(backend, key_groups.clone(), &self.states);
            let key_groups = key_groups.clone();
            snapshots.push(StateSnapshot { key_groups, body, broadcast: None, part: Some(part.clone()) });
        }
        Ok(snapshots)
    }

    fn snapshot(&mut self) -> Result<Vec<StateSnapshot>, String> {
        if self.states.is_empty() {
            return Ok(Vec::new());
        }
        let backend = &mut self.guest.keyed().backend;
        let body = state::checkpoint(backend, self.key_groups.clone(), &self.states).map_err(|e| e.to_string())?;
        Ok(vec![self.snapshot_of(body)])
    }
}

/// How the cause of a failed guest call begins when the guest trapped (the registry counts them).
pub const GUEST_TRAPPED: &str = "the guest trapped in";

/// Describes a failed guest call: the deadline, or the cause (a trap, or a host limit such as the
/// memory limit), followed by what the guest wrote last (a Rust panic's message and location
/// become the cause) and the named frames of its backtrace.
pub(crate) fn call_error(call: &str, error: &wasmtime::Error, limits: &SandboxLimits, output: &GuestOutput) -> String {
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        let hint = match call {
            "describe()" => "describe() only returns the operator's description",
            _ => "raise `call-deadline` if this is expected",
        };
        return format!(
            "{call} exceeded its call deadline of {} and was stopped; {hint}",
            humantime::format_duration(limits.call_deadline)
        );
    }
    let mut recent = output.take_recent();
    let trap = error.downcast_ref::<Trap>();
    // Rust's panic hook writes the message and location to stderr, then the guest aborts.
    let panic = match trap {
        Some(Trap::UnreachableCodeReached) => guest_output::take_panic(&mut recent),
        _ => None,
    };
    let cause = match (trap, panic) {
        (_, Some(panic)) => format!("{GUEST_TRAPPED} {call}: {panic}"),
        // A Rust or C guest keeps its stack in linear memory: deep recursion runs it off the
        // bottom of memory, which wasm reports as an out-of-bounds access.
        (Some(Trap::MemoryOutOfBounds), _) => format!(
            "{GUEST_TRAPPED} {call}: out of bounds memory access (in a guest compiled from Rust, C or \
             the like, most often a stack overflow: recursion too deep for its stack)"
        ),
        (Some(Trap::StackOverflow), _) => format!("{GUEST_TRAPPED} {call}: stack overflow (recursion too deep)"),
        (Some(trap), _) => format!("{GUEST_TRAPPED} {call}: {trap}"),
        // wasmtime's bound on what one call may hand the host (128 MiB).
        (None, _) if error.root_cause().to_string().contains("fuel allocated for hostcalls") => format!(
            "{call} handed the host more than 128 MiB at once (what it emitted for one batch, or one \
             state value): emit less per event"
        ),
        (None, _) => format!("{call} failed: {}", error.root_cause()),
    };
    let mut described = guest_output::with_lines(cause, &recent);
    if let Some(backtrace) = error.downcast_ref::<WasmBacktrace>() {
        described.push_str(&guest_output::backtrace(backtrace));
    }
    clip(&described).into_owned()
}

/// The error a guest returned from `call`, with what it wrote last.
pub(crate) fn operator_error(message: &str, output: &GuestOutput) -> String {
    let recent = output.take_recent();
    clip(&guest_output::with_lines(format!("the operator failed: {message}"), &recent)).into_owned()
}
