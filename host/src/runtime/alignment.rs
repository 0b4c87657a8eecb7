//! [`BarrierAligner`]: which inputs of a subtask have delivered which barriers, as Flink's
//! `SingleCheckpointBarrierHandler` (exactly-once) and `CheckpointBarrierTracker` (at-least-once)
//! keep it. A watermark valve, merging event time over the same inputs, belongs beside it.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Barrier alignment over a subtask's live inputs, by index.
///
/// In exactly-once mode an input that has delivered barrier n is not read again until barrier n
/// has arrived on every live input, so that nothing after the barrier is processed before the
/// snapshot; in at-least-once mode it keeps being read, and the barrier passes once all have it.
/// There an input may deliver n+1 before another delivers n, so each input's last barrier is
/// kept (barriers arrive in order on every input), not one flag per input.
pub(crate) struct BarrierAligner {
    /// Per live input: the last barrier it delivered (0: none yet).
    last: Vec<u64>,
    /// Barriers delivered by some input but not yet by all, oldest first.
    waiting: VecDeque<u64>,
    /// When the oldest waiting barrier's first input delivered it.
    started: Option<Instant>,
    /// How long the last completed alignment took.
    last_alignment: Duration,
    exactly_once: bool,
}

impl BarrierAligner {
    pub(crate) fn new(inputs: usize, exactly_once: bool) -> Self {
        BarrierAligner {
            last: vec![0; inputs],
            waiting: VecDeque::new(),
            started: None,
            last_alignment: Duration::ZERO,
            exactly_once,
        }
    }

    /// Whether input `i` must not be read now: it delivered the barrier being aligned, exactly once.
    pub(crate) fn is_blocked(&self, i: usize) -> bool {
        self.exactly_once && self.waiting.front().is_some_and(|&oldest| self.last[i] >= oldest)
    }

    /// Input `i` delivered barrier `id`.
    pub(crate) fn arrived(&mut self, i: usize, id: u64) {
        if self.waiting.is_empty() {
            self.started = Some(Instant::now());
        }
        if self.waiting.back().is_none_or(|&newest| id > newest) && self.last.iter().any(|&last| last < id) {
            self.waiting.push_back(id);
        }
        self.last[i] = id;
    }

    /// Input `i` ended: it is no longer waited for (its index is taken by the last input's, as
    /// the caller's `swap_remove` does).
    pub(crate) fn ended(&mut self, i: usize) {
        self.last.swap_remove(i);
    }

    /// The oldest waiting barrier, once every live input has delivered it.
    pub(crate) fn aligned(&mut self) -> Option<u64> {
        let oldest = *self.waiting.front()?;
        if self.last.iter().any(|&last| last < oldest) {
            return None;
        }
        self.waiting.pop_front();
        let now = Instant::now();
        self.last_alignment = self.started.map_or(Duration::ZERO, |t| now - t);
        // The next waiting barrier, if any, has been waiting since at least now.
        self.started = (!self.waiting.is_empty()).then_some(now);
        Some(oldest)
    }

    /// How long the last aligned barrier waited from its first input to its last.
    pub(crate) fn last_alignment(&self) -> Duration {
        self.last_alignment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every barrier passes, in order, however the inputs interleave them.
    #[test]
    fn at_least_once_passes_a_barrier_that_one_input_delivered_early() {
        let mut aligner = BarrierAligner::new(2, false);
        aligner.arrived(0, 19);
        aligner.arrived(0, 20);
        assert_eq!(aligner.aligned(), None);
        aligner.arrived(1, 19);
        assert_eq!(aligner.aligned(), Some(19));
        assert_eq!(aligner.aligned(), None);
        aligner.arrived(1, 20);
        assert_eq!(aligner.aligned(), Some(20));
        assert_eq!(aligner.aligned(), None);
    }

    #[test]
    fn exactly_once_blocks_an_input_until_every_input_has_the_barrier() {
        let mut aligner = BarrierAligner::new(3, true);
        aligner.arrived(2, 7);
        assert!(aligner.is_blocked(2) && !aligner.is_blocked(0));
        aligner.arrived(0, 7);
        assert_eq!(aligner.aligned(), None);
        // The input still missing ends: the barrier no longer waits for it.
        aligner.ended(1);
        assert_eq!(aligner.aligned(), Some(7));
        assert!(!aligner.is_blocked(0) && !aligner.is_blocked(1));
    }
}
