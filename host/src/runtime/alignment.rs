//! [`BarrierAligner`]: which inputs of a subtask have delivered the barrier being aligned, as
//! Flink's `SingleCheckpointBarrierHandler` keeps it. A watermark valve, merging event time over
//! the same inputs, belongs beside it.
use std::time::{Duration, Instant};

/// Barrier alignment over a subtask's live inputs, by index.
///
/// In exactly-once mode an input that has delivered barrier n is not read again until barrier n
/// has arrived on every live input, so that nothing after the barrier is processed before the
/// snapshot; in at-least-once mode it keeps being read, and the barrier passes once all have it.
pub(crate) struct BarrierAligner {
    /// Per live input: it has delivered the barrier being aligned.
    arrived: Vec<bool>,
    aligning: Option<u64>,
    /// When the first barrier of the alignment under way arrived.
    started: Option<Instant>,
    /// How long the last completed alignment took.
    last: Duration,
    exactly_once: bool,
}

impl BarrierAligner {
    pub(crate) fn new(inputs: usize, exactly_once: bool) -> Self {
        BarrierAligner {
            arrived: vec![false; inputs],
            aligning: None,
            started: None,
            last: Duration::ZERO,
            exactly_once,
        }
    }

    /// Whether input `i` must not be read now: it delivered the barrier being aligned, exactly once.
    pub(crate) fn is_blocked(&self, i: usize) -> bool {
        self.exactly_once && self.arrived[i]
    }

    /// Input `i` delivered barrier `id`.
    pub(crate) fn arrived(&mut self, i: usize, id: u64) {
        if self.aligning.is_none() {
            self.started = Some(Instant::now());
        }
        self.aligning = Some(id);
        self.arrived[i] = true;
    }

    /// Input `i` ended: it is no longer waited for (its index is taken by the last input's, as
    /// the caller's `swap_remove` does).
    pub(crate) fn ended(&mut self, i: usize) {
        self.arrived.swap_remove(i);
    }

    /// The barrier being aligned, once every live input has delivered it.
    pub(crate) fn aligned(&mut self) -> Option<u64> {
        let id = self.aligning?;
        if !self.arrived.iter().all(|&a| a) {
            return None;
        }
        self.aligning = None;
        self.last = self.started.take().map_or(Duration::ZERO, |t| t.elapsed());
        self.arrived.iter_mut().for_each(|a| *a = false);
        Some(id)
    }

    /// How long the last aligned barrier waited from its first input to its last.
    pub(crate) fn last_alignment(&self) -> Duration {
        self.last
    }
}
