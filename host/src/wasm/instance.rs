//! Making an operator subtask's instance, and making it anew when its memory has grown.
//!
//! All of a subtask's state is in the host (keyed state and timers in its [`KeyedState`]), so an
//! instance holds nothing that a fresh one, opened with the same configuration, would not: the
//! contract says an operator's own fields are caches that may vanish at any restart. That lets
//! the host replace an instance whose linear memory has grown near its limit, which Wasm cannot
//! give back, instead of failing the job when a guest's toolchain leaks (componentize-py 0.25.1
//! keeps every output frame it returns: about 60 MiB per million events of `count_py`).
use std::sync::Arc;

use wasmtime::Store;

use super::engine::OperatorModule;
use super::guest::Guest;
use super::host::{HostState, KeyedState, mib};
use super::operator::{SandboxLimits, arm, call_error, operator_error, watch};
use crate::runtime::{SubtaskInfo, clip};

/// A new store and instance of `module` for subtask `info`, with keyed state `keyed`, not opened.
pub(crate) fn instantiate(
    module: &OperatorModule,
    keyed: KeyedState,
    limits: &SandboxLimits,
    info: &SubtaskInfo,
) -> Result<(Store<HostState>, Guest), String> {
    let state = HostState::new(keyed, limits.memory_limit, Arc::from(info.to_string()));
    let mut store = Store::new(&module.engine, state);
    store.data_mut().interrupt = info.interrupt.clone();
    store.limiter(|s| &mut s.limits);
    watch(&mut store);
    arm(&mut store, limits.call_deadline);
    let instance = module
        .pre
        .instantiate(&mut store)
        .map_err(|e| call_error("instantiation", &e, limits, &store.data().output))?;
    Ok((store, instance))
}

/// Calls the guest's `open` with the operator's configuration `config`.
fn open(
    store: &mut Store<HostState>,
    instance: &Guest,
    config: &str,
    limits: &SandboxLimits,
    info: &SubtaskInfo,
) -> Result<(), String> {
    arm(store, limits.call_deadline);
    instance
        .open(store, config, info)
        .map_err(|e| call_error("open", &e, limits, &store.data().output))?
        .map_err(|message| format!("open refused the configuration {}: {}", clip(config), clip(&message)))
}

/// When an instance is replaced: once its largest memory has grown past three quarters of the
/// limit, and if a fresh instance, just opened, used less than half (else a new one would soon be
/// as full, and replacing it would only cost time).
pub(crate) fn worth_renewing(largest_memory: usize, fresh_memory: usize, limit: usize) -> bool {
    largest_memory > limit / 4 * 3 && fresh_memory < limit / 2
}

/// Which export a frame goes to.
#[derive(Clone, Copy)]
pub(crate) enum GuestCall {
    /// `process-batch`, with an input frame.
    ProcessBatch,
    /// `on-timers`, with a timer frame.
    OnTimers,
}

/// An opened instance of a module for one subtask, and what a fresh one is made of: the guest
/// boundary that the embedded runtime's operators and `weir worker` share. One frame in, one
/// output frame out, under the call deadline and the memory limit.
pub(crate) struct GuestInstance {
    pub(crate) store: Store<HostState>,
    instance: Guest,
    module: Arc<OperatorModule>,
    config: String,
    pub(crate) info: SubtaskInfo,
    pub(crate) limits: SandboxLimits,
    /// The size of a fresh instance's largest memory once opened.
    fresh_memory: usize,
}

impl GuestInstance {
    /// Opens `instance` (made by [`instantiate`], its state in `store`) with `config`.
    pub(crate) fn open(
        module: Arc<OperatorModule>,
        (mut store, instance): (Store<HostState>, Guest),
        config: String,
        limits: SandboxLimits,
        info: SubtaskInfo,
    ) -> Result<Self, String> {
        open(&mut store, &instance, &config, &limits, &info)?;
        let fresh_memory = store.data().limits.largest;
        Ok(GuestInstance { store, instance, module, config, info, limits, fresh_memory })
    }

    /// Its module's SHA-256.
    pub(crate) fn sha256(&self) -> &str {
        &self.module.sha256
    }

    pub(crate) fn keyed(&mut self) -> &mut KeyedState {
        &mut self.store.data_mut().keyed
    }

    /// Calls `call` with `frame`; the guest's output frame.
    pub(crate) fn call(&mut self, call: GuestCall, frame: &[u8]) -> Result<Vec<u8>, String> {
        arm(&mut self.store, self.limits.call_deadline);
        let (name, output) = match call {
            GuestCall::ProcessBatch => {
                let _call = tracing::trace_span!("guest_call", call = "process-batch").entered();
                ("process-batch", self.instance.process_batch(&mut self.store, frame))
            }
            GuestCall::OnTimers => {
                let _call = tracing::trace_span!("guest_call", call = "on-timers").entered();
                ("on-timers", self.instance.on_timers(&mut self.store, frame))
            }
        };
        output
            .map_err(|e| call_error(name, &e, &self.limits, &self.store.data().output))?
            .map_err(|message| operator_error(&message, &self.store.data().output))
    }

    /// The guest's `migrate` of `items` of state `state` saved under schema version `from_version`.
    pub(crate) fn migrate(&mut self, state: u32, from_version: u32, items: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
        arm(&mut self.store, self.limits.call_deadline);
        self.instance
            .migrate(&mut self.store, state, from_version, items)
            .map_err(|e| call_error("migrate", &e, &self.limits, &self.store.data().output))?
    }

    /// Replaces the instance by a fresh one, opened anew, when its memory has grown near the
    /// limit (see [`worth_renewing`]): after a guest call, with all state in the host.
    pub(crate) fn renew_if_grown(&mut self) -> Result<(), String> {
        let (largest, limit) = (self.store.data().limits.largest, self.limits.memory_limit);
        if !worth_renewing(largest, self.fresh_memory, limit) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.renew()?;
        tracing::info!(
            "{}: its instance's memory grew to {} of its {} limit; continuing in a fresh instance (state and \
             timers are the host's), started in {:?}",
            self.info,
            mib(largest),
            mib(limit),
            started.elapsed()
        );
        Ok(())
    }
}

impl GuestInstance {
    /// Replaces the instance by a fresh one, opened anew, which takes the state over (after a
    /// trap, an instance cannot be entered again).
    pub(crate) fn renew(&mut self) -> Result<(), String> {
        // Opened before it takes the state over (`open` has no key to reach state with): if it
        // fails, the job fails with the state still where it was.
        let kinds = self.store.data().keyed.kinds.clone();
        let (mut store, fresh) = instantiate(&self.module, KeyedState::empty(kinds.clone()), &self.limits, &self.info)?;
        open(&mut store, &fresh, &self.config, &self.limits, &self.info)?;
        store.data_mut().keyed = std::mem::replace(&mut self.store.data_mut().keyed, KeyedState::empty(kinds));
        self.fresh_memory = store.data().limits.largest;
        (self.store, self.instance) = (store, fresh);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_a_grown_instance_only_when_a_fresh_one_had_room() {
        let mib = 1 << 20;
        assert!(!worth_renewing(100 * mib, 40 * mib, 256 * mib));
        assert!(worth_renewing(200 * mib, 40 * mib, 256 * mib));
        assert!(!worth_renewing(200 * mib, 150 * mib, 256 * mib));
    }
}
