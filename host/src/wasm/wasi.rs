//! WASI as weir offers it: wasmtime-wasi's synchronous implementation (no filesystem, network,
//! environment or stdin, see [`super::host::HostState::new`]), except for the two calls that wait:
//! `wasi:io/poll.poll` and `pollable.block`.
//!
//! Epoch interruption stops a guest only while it runs Wasm: a guest blocked in a host call (a
//! sleep in Rust's `std::thread::sleep` or Python's `time.sleep` is a `poll` on a timer) would
//! never reach its deadline, and its job could not be cancelled. Here both waits end at the
//! current guest call's deadline: the wait is the same future wasmtime-wasi awaits, raced against
//! that deadline, and losing the race traps with a message that names the call.
use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi_io::bindings::wasi::io::poll::{Host as _, HostPollable as _};
use wasmtime_wasi_io::poll::DynPollable;

use super::host::HostState;

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
            let deadline = state.call_deadline;
            let wait = state.table().poll(pollables);
            Ok((until_deadline(deadline, "wasi:io/poll.poll", wait)??,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, HostState>, (pollable,): (Resource<DynPollable>,)| {
            let state = store.data_mut();
            let deadline = state.call_deadline;
            let wait = state.table().block(pollable);
            until_deadline(deadline, "wasi:io/pollable.block", wait)??;
            Ok(())
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Runs `wait` on wasmtime-wasi's runtime until it is done or `deadline` is reached (then an
/// error naming `call`).
fn until_deadline<T>(deadline: Option<CallDeadline>, call: &str, wait: impl Future<Output = T>) -> wasmtime::Result<T> {
    let Some(deadline) = deadline else {
        return Ok(wasmtime_wasi::runtime::in_tokio(wait));
    };
    // The timer is made inside the runtime, which it needs.
    let bounded = wasmtime_wasi::runtime::in_tokio(async { tokio::time::timeout_at(deadline.at.into(), wait).await });
    bounded.map_err(|_| {
        wasmtime::format_err!(
            "the guest waited in {call} (a sleep or a blocking read) until its call deadline of {} and was \
             stopped; operators must not wait: raise `call-deadline` if this is expected",
            humantime::format_duration(deadline.limit)
        )
    })
}
