//! When the next periodic checkpoint is due: every `interval`, at most `max-concurrent` at once,
//! at least `min-pause` after the last one ended (Flink's `CheckpointRequestDecider`).
use std::time::Instant;

use crate::runtime::CheckpointConfig;

/// The trigger schedule of periodic checkpoints.
pub(super) struct TriggerDecider<'a> {
    config: &'a CheckpointConfig,
    /// When the interval next elapses.
    next: Instant,
    /// When the last checkpoint completed or failed, for `min-pause`.
    last_end: Option<Instant>,
}

impl<'a> TriggerDecider<'a> {
    /// The first checkpoint is due one interval from now.
    pub(super) fn new(config: &'a CheckpointConfig) -> Self {
        TriggerDecider { config, next: Instant::now() + config.interval, last_end: None }
    }

    /// When the next checkpoint may start, given `in_progress` checkpoints (not savepoints);
    /// `None` while `max-concurrent` are.
    pub(super) fn due(&self, in_progress: usize) -> Option<Instant> {
        if in_progress >= self.config.max_concurrent as usize {
            return None;
        }
        let after_pause = self.last_end.map(|end| end + self.config.min_pause);
        Some(after_pause.map_or(self.next, |p| p.max(self.next)))
    }

    /// A checkpoint was triggered at `now`: the next is one interval later.
    pub(super) fn triggered(&mut self, now: Instant) {
        self.next = now + self.config.interval;
    }

    /// A checkpoint completed or failed: `min-pause` counts from now.
    pub(super) fn ended(&mut self) {
        self.last_end = Some(Instant::now());
    }
}
