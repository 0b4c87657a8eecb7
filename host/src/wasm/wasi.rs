//! WASI as weir offers it: wasmtime-wasi's synchronous implementation (no filesystem, network,
//! environment or stdin, see [`super::host::HostState::new`]), except for the two calls that wait:
//! `wasi:io/poll.poll` and `pollable.block`.
//!
//! Epoch interruption stops a guest only while it runs Wasm: a guest blocked in a host call (a
//! sleep in Rust's `std::thread::sleep` or Python's `time.sleep` is a `poll` on a timer) would
//! never reach its deadline, and its job could not be cancelled. Here both waits end at the
//! current guest call's deadline, or sooner when the subtask is interrupted (its job cancelled or
//! its attempt failed): the wait is the same future wasmtime-wasi awaits, raced against both, and
//! losing the race traps with a message that names the call.
use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi_io::bindings::wasi::io::poll::{Host as _, HostPollable as _};
use wasmtime_wasi_io::poll::DynPollable;

use super::host::HostState;
use crate::runtime::Interrupt;

/// The `wasi:io` version wasmtime-wasi defines; its `poll` interface is replaced under the same
/// name (guests importing any 0.2.x are linked to it by semver).
const POLL_INTERFACE: &str = "wasi:io/poll@0.2.12";

/// The deadline of the guest call in progress.
#[derive(Clone, Copy)]
pub(crate) struct CallDeadline {
    /// When it is reached.
    pub(crate) at: Instant,
    /// The configured `call-deadline`, for messages.
    pub(crate) limit: Duration,
}

impl CallDeadline {
    /// The deadline of a call starting now.
    pub(crate) fn starting_now(limit: Duration) -> Self {
        CallDeadline { at: Instant::now() + limit, limit }
    }
}

/// Adds WASI to `linker`, its waits bounded by each call's deadline.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut poll = linker.instance(POLL_INTERFACE)?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, HostState>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let state = store.data_mut();
            let (deadline, interrupt) = (state.call_deadline, state.interrupt.clone());
            let wait = state.table().poll(pollables);
            Ok((bounded(deadline, &interrupt, "wasi:io/poll.poll", wait)??,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, HostState>, (pollable,): (Resource<DynPollable>,)| {
            let state = store.data_mut();
            let (deadline, interrupt) = (state.call_deadline, state.interrupt.clone());
            let wait = state.table().block(pollable);
            bounded(deadline, &interrupt, "wasi:io/pollable.block", wait)??;
            Ok(())
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// How often a wait checks whether its subtask was interrupted.
const INTERRUPT_CHECK: Duration = Duration::from_millis(50);

/// Runs `wait` on wasmtime-wasi's runtime until it is done, `deadline` is reached or `interrupt`
/// is raised (then an error naming `call`).
fn bounded<T>(
    deadline: Option<CallDeadline>,
    interrupt: &Interrupt,
    call: &str,
    wait: impl Future<Output = T>,
) -> wasmtime::Result<T> {
    let outcome = wasmtime_wasi::runtime::in_tokio(async {
        tokio::pin!(wait);
        loop {
            let slice_end = Instant::now() + INTERRUPT_CHECK;
            let until = deadline.map_or(slice_end, |d| d.at.min(slice_end));
            // The timer is made here, inside the runtime, which it needs.
            if let Ok(done) = tokio::time::timeout_at(until.into(), &mut wait).await {
                return Ok(done);
            }
            if interrupt.is_raised() {
                return Err(format!("the guest was stopped in {call}: its job is stopping"));
            }
            if let Some(deadline) = deadline.filter(|d| Instant::now() >= d.at) {
                return Err(format!(
                    "the guest waited in {call} (a sleep or a blocking read) until its call deadline of {} and \
                     was stopped; operators must not wait: raise `call-deadline` if this is expected",
                    humantime::format_duration(deadline.limit)
                ));
            }
        }
    });
    outcome.map_err(|message| wasmtime::format_err!("{message}"))
}
