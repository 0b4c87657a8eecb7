//! The `generator` source, for demos, tests and benchmarks: event i has key `k<i mod keys>`,
//! value `{"seq":i}` and, with an event-time step, timestamp i × step (in whole milliseconds: a
//! step of 1µs puts 1,000 events in each millisecond). Subtask s of p produces the indices i with
//! i mod p = s. Unbounded when no count is given.
//!
//! It rescales: a subtask's position is the indices it has left, a few listed (`pending`) and the
//! rest a progression (`next`, `next + step`, …). A restore merges every subtask's into one, the
//! indices below the furthest subtask's next listed and every index from it on left, and each
//! new subtask takes every p-th listed index and every p-th of the rest.
use std::collections::VecDeque;

use crate::runtime::batch::extend_short;
use crate::runtime::{EventBatch, Position, Source, SourceFactory, SubtaskInfo};

/// The most indices a merged position lists: more means the subtasks were further apart than
/// backpressure lets them drift.
const MAX_PENDING: usize = 10_000_000;

/// Creates generator subtasks.
pub struct GeneratorSourceFactory {
    count: Option<u64>,
    keys: u64,
    rate: Option<f64>,
    event_time_step: Option<u64>,
}

impl GeneratorSourceFactory {
    /// `count` events in all (unbounded when `None`) over `keys` distinct keys (at least 1).
    pub fn new(count: Option<u64>, keys: u64, rate: Option<f64>) -> Self {
        GeneratorSourceFactory { count, keys: keys.max(1), rate, event_time_step: None }
    }

    /// Event i gets timestamp i × `step` nanoseconds, in whole milliseconds.
    pub fn with_event_time_step(mut self, step: u64) -> Self {
        self.event_time_step = Some(step);
        self
    }

    fn left_of(&self, position: &Position, uid: &str, subtasks: usize) -> Result<Left, String> {
        // Before it rescaled, a subtask kept its next index, stepping by the parallelism.
        if let Some(next) = position.legacy_number() {
            return Ok(Left { pending: Vec::new(), next, step: subtasks as u64 });
        }
        position.read_json(uid, "a generator source's")
    }
}

/// The indices a generator subtask has left: `pending` in order, then `next`, `next + step`, ….
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Left {
    pending: Vec<u64>,
    next: u64,
    step: u64,
}

impl Left {
    /// Part `index` of `parts`: every `parts`-th pending index, and every `parts`-th of the rest.
    fn part(&self, parts: u32, index: u32) -> Left {
        let (parts, index) = (u64::from(parts.max(1)), u64::from(index));
        Left {
            pending: self.pending.iter().copied().skip(index as usize).step_by(parts as usize).collect(),
            next: self.next.saturating_add(index.saturating_mul(self.step)),
            step: self.step.saturating_mul(parts),
        }
    }

    /// What `recorded` (every subtask's position, `recorded.len()` subtasks) have left, as one.
    fn merge(recorded: &[Left]) -> Result<Left, String> {
        let next = recorded.iter().map(|l| l.next).max().unwrap_or(0);
        let mut pending: Vec<u64> = Vec::new();
        for left in recorded {
            pending.extend(&left.pending);
            let mut i = left.next;
            while i < next && left.step > 0 {
                if pending.len() >= MAX_PENDING {
                    return Err(format!(
                        "the generator's subtasks were more than {MAX_PENDING} events apart at this checkpoint; \
                         restore it at the parallelism it was taken at"
                    ));
                }
                pending.push(i);
                i = i.saturating_add(left.step);
            }
        }
        pending.sort_unstable();
        Ok(Left { pending, next, step: 1 })
    }
}

impl SourceFactory for GeneratorSourceFactory {
    fn create(&self, info: &SubtaskInfo, resume: Option<&Position>) -> Result<Box<dyn Source>, String> {
        let all = match resume {
            Some(position) => self.left_of(position, &info.uid, 1)?,
            None => Left { pending: Vec::new(), next: 0, step: 1 },
        };
        let Left { pending, next, step } = all.part(info.parallelism, info.index);
        Ok(Box::new(Generator {
            pending: pending.into(),
            next,
            step,
            end: self.count.unwrap_or(u64::MAX),
            keys: self.keys,
            event_time_step: self.event_time_step,
            key: Vec::with_capacity(24),
            digits: itoa::Buffer::new(),
        }))
    }

    fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn merge_positions(&self, uid: &str, recorded: &[Position]) -> Result<Position, String> {
        let left = recorded.iter().map(|p| self.left_of(p, uid, recorded.len())).collect::<Result<Vec<_>, _>>()?;
        Ok(Position::json(&Left::merge(&left)?))
    }
}

struct Generator {
    /// Indices before `next` still to produce, in order.
    pending: VecDeque<u64>,
    next: u64,
    step: u64,
    end: u64,
    keys: u64,
    event_time_step: Option<u64>,
    key: Vec<u8>,
    digits: itoa::Buffer,
}

impl Generator {
    /// The next index to produce, if any is left.
    fn take(&mut self) -> Option<u64> {
        // Listed indices at or past the count (a restore with a smaller one) are skipped.
        while let Some(i) = self.pending.pop_front() {
            if i < self.end {
                return Some(i);
            }
        }
        let i = self.next;
        (i < self.end).then(|| {
            self.next = self.next.saturating_add(self.step);
            i
        })
    }
}

impl Source for Generator {
    fn poll(&mut self, out: &mut EventBatch, max: usize) -> Result<bool, String> {
        while out.len() < max {
            let Some(i) = self.take() else { return Ok(false) };
            self.key.clear();
            self.key.push(b'k');
            extend_short(&mut self.key, self.digits.format(i % self.keys).as_bytes());
            let digits = &mut self.digits;
            let timestamp = self
                .event_time_step
                .map(|step| (u128::from(i) * u128::from(step) / 1_000_000).min(i64::MAX as u128) as i64);
            out.push_with(Some(&self.key), timestamp, |buf| {
                buf.extend_from_slice(b"{\"seq\":");
                extend_short(buf, digits.format(i).as_bytes());
                buf.push(b'}');
            });
        }
        Ok(!self.pending.is_empty() || self.next < self.end)
    }

    fn position(&self) -> Position {
        Position::json(&Left { pending: self.pending.iter().copied().collect(), next: self.next, step: self.step })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every index is produced once, whatever the parallelism and wherever the subtasks stop and
    /// go on at another parallelism; an index at or past the count never.
    #[test]
    fn every_index_is_produced_once_across_rescales() {
        let factory = GeneratorSourceFactory::new(Some(1000), 10, None);
        let read = super::super::read_across_rescales(&factory, &[2, 3, 1, 4], |index| 50 * (index as usize + 1));
        let mut produced: Vec<u64> = read
            .iter()
            .map(|v| {
                let value = std::str::from_utf8(v).unwrap();
                value.trim_start_matches("{\"seq\":").trim_end_matches('}').parse::<u64>().unwrap()
            })
            .collect();
        produced.sort_unstable();
        assert_eq!(produced, (0..1000).collect::<Vec<_>>());
    }

    /// Restored with a smaller count, a subtask skips the listed indices at or past it (a million
    /// of them, one after the other, without growing its stack).
    #[test]
    fn listed_indices_past_a_smaller_count_are_skipped() {
        let left = Left { pending: (5..1_000_005).collect(), next: 2_000_000, step: 1 };
        let factory = GeneratorSourceFactory::new(Some(5), 10, None);
        let info = SubtaskInfo {
            uid: "g".into(),
            index: 0,
            parallelism: 1,
            max_parallelism: 128,
            attempt: 0,
            interrupt: Default::default(),
        };
        let mut source = factory.create(&info, Some(&Position::json(&left))).unwrap();
        let mut batch = EventBatch::default();
        assert!(!source.poll(&mut batch, 100).unwrap(), "nothing is left below the count");
        assert_eq!(batch.len(), 0);
    }

    /// A position of the 8-byte form (a subtask's next index, stepping by the parallelism)
    /// merges as the progressions it stands for.
    #[test]
    fn positions_from_before_rescaling_merge() {
        let factory = GeneratorSourceFactory::new(None, 10, None);
        let old = [Position(10u64.to_le_bytes().to_vec()), Position(5u64.to_le_bytes().to_vec())];
        let merged: Left = factory.merge_positions("g", &old).unwrap().read_json("g", "").unwrap();
        assert_eq!(merged, Left { pending: vec![5, 7, 9], next: 10, step: 1 });
    }
}
