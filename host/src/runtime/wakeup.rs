//! [`Wakeup`]: a count of changes that threads wait on, so that a waiting thread is woken by the
//! change itself (a barrier requested, a stop called off, the end reached, a failure, a cancel),
//! never by polling.
use std::sync::{Condvar, Mutex};

/// Changes announced so far, and the condition waiters sleep on.
#[derive(Default)]
pub struct Wakeup {
    count: Mutex<u64>,
    changed: Condvar,
}

impl Wakeup {
    /// Wakes every waiter: something they watch changed.
    pub fn announce(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.changed.notify_all();
    }

    /// What has been announced so far: read it before checking what to wait for, then wait with
    /// it, so that a change between the check and the wait is not missed.
    pub fn seen(&self) -> u64 {
        *self.count.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until something is announced after `seen`.
    pub fn wait(&self, seen: u64) {
        let count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.changed.wait_while(count, |count| *count == seen));
    }
}
