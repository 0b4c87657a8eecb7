//! The `generator` source, for demos, tests and benchmarks: event i has key `k<i mod keys>`,
//! value `{"seq":i}` and, with an event-time step, timestamp i × step (in whole milliseconds: a
//! step of 1µs puts 1,000 events in each millisecond). Subtask s of
//! p produces the indices i with i mod p = s. Unbounded when no count is given.
use crate::runtime::batch::extend_short;
use crate::runtime::{EventBatch, Position, Source, SourceFactory, SubtaskInfo};

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
}

impl SourceFactory for GeneratorSourceFactory {
    fn create(&self, info: &SubtaskInfo, resume: Option<&Position>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(Generator {
            // Its position is the index it goes on from.
            next: resume.map_or(Ok(u64::from(info.index)), |p| p.to_u64(info))?,
            step: u64::from(info.parallelism),
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
}

struct Generator {
    next: u64,
    step: u64,
    end: u64,
    keys: u64,
    event_time_step: Option<u64>,
    key: Vec<u8>,
    digits: itoa::Buffer,
}

impl Source for Generator {
    fn poll(&mut self, out: &mut EventBatch, max: usize) -> Result<bool, String> {
        while out.len() < max && self.next < self.end {
            let i = self.next;
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
            self.next += self.step;
        }
        Ok(self.next < self.end)
    }

    fn position(&self) -> Position {
        Position::from_u64(self.next)
    }
}
