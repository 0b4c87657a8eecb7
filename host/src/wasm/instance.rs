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
use super::host::{HostState, KeyedState};
use super::operator::{SandboxLimits, arm, call_error, watch};
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
pub(crate) fn open(
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
