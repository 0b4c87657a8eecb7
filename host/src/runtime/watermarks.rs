//! Event time: watermarks generated where the job file asks for them (Flink's bounded
//! out-of-orderness with an idle timeout), and each subtask's watermark as the minimum over its
//! inputs (Flink's `StatusWatermarkValve`): idle inputs excepted, never going back.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::batch::EventBatch;

/// The watermark of an input that has ended, of a bounded job whose sources are exhausted and of
/// `stop --drain`: every event-time timer is due at it.
pub const END_OF_TIME: i64 = i64::MAX;

/// No watermark yet: nothing is late, no event-time timer is due.
pub const NO_WATERMARK: i64 = i64::MIN;

/// Event time's progress, as it flows between subtasks with the events (and behind barriers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventTime {
    /// No event at or before this time (milliseconds) is to come: later ones are late.
    Watermark(i64),
    /// The sender has no events for now: do not wait for its watermark. It is active again with
    /// its next event or watermark.
    Idle,
}

/// The job file's `watermarks = { out-of-orderness = "5s", idle-timeout = "1m" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkSpec {
    /// How late an event may come after a later one and still not be late.
    pub out_of_orderness: Duration,
    /// After this long without an event, the subtask declares itself idle, so that it does not
    /// hold the watermark of the subtasks downstream back (none: never).
    pub idle_timeout: Option<Duration>,
}

/// Generates one subtask's watermarks from the timestamps of the events it sends: the highest
/// timestamp seen, less the out-of-orderness, less 1 ms: an event at or before the watermark is
/// late, so an event exactly the out-of-orderness behind the highest is not.
pub(crate) struct WatermarkGenerator {
    spec: WatermarkSpec,
    max_timestamp: i64,
    /// The last watermark sent.
    sent: i64,
    last_event: Instant,
    idle: bool,
}

impl WatermarkGenerator {
    pub(crate) fn new(spec: WatermarkSpec) -> Self {
        WatermarkGenerator {
            spec,
            max_timestamp: NO_WATERMARK,
            sent: NO_WATERMARK,
            last_event: Instant::now(),
            idle: false,
        }
    }

    /// Looks at the timestamps of a batch about to be sent; returns the watermark to send after
    /// it, if it advanced.
    pub(crate) fn observe(&mut self, batch: &EventBatch) -> Option<i64> {
        if batch.is_empty() {
            return None;
        }
        self.last_event = Instant::now();
        self.idle = false;
        let delay = i64::try_from(self.spec.out_of_orderness.as_millis()).unwrap_or(i64::MAX);
        if let Some(max) = batch.iter().filter_map(|e| e.timestamp).max() {
            self.max_timestamp = self.max_timestamp.max(max);
        }
        let watermark = self.max_timestamp.saturating_sub(delay).saturating_sub(1);
        (self.max_timestamp != NO_WATERMARK && watermark > self.sent).then(|| {
            self.sent = watermark;
            watermark
        })
    }

    /// True once, when the subtask has sent no event for the idle timeout.
    pub(crate) fn became_idle(&mut self, now: Instant) -> bool {
        let due = self.spec.idle_timeout.is_some_and(|t| now.duration_since(self.last_event) >= t);
        let became = due && !self.idle;
        self.idle |= due;
        became
    }
}

/// One input's watermark and whether it is idle.
#[derive(Debug, Clone, Copy)]
struct InputTime {
    watermark: i64,
    idle: bool,
}

/// A subtask's watermark over its inputs (Flink's `StatusWatermarkValve`): the minimum of the
/// watermarks of the inputs that are not idle. It only advances. When every input is idle, it
/// advances to the highest of their watermarks (nothing holds it back any more) and the subtask
/// is idle too. An input that ended before the end of time (its source stopped at a savepoint
/// without draining) holds the watermark where it left it: what the other inputs bring after a
/// stop's barrier must not fire timers that the savepoint has as pending (Flink's stop without
/// drain fires nothing either).
pub(crate) struct WatermarkValve {
    inputs: Vec<InputTime>,
    /// The least watermark of the inputs that ended before the end of time.
    held: Option<i64>,
    current: i64,
    idle: bool,
    /// What the subtask has to pass on, oldest first.
    outputs: VecDeque<EventTime>,
}

impl WatermarkValve {
    pub(crate) fn new(inputs: usize) -> Self {
        WatermarkValve {
            inputs: vec![InputTime { watermark: NO_WATERMARK, idle: false }; inputs],
            held: None,
            current: NO_WATERMARK,
            idle: false,
            outputs: VecDeque::new(),
        }
    }

    /// The next watermark or idleness to pass on, if any.
    pub(crate) fn output(&mut self) -> Option<EventTime> {
        self.outputs.pop_front()
    }

    /// Input `i` sent watermark `watermark` (it is active again, if it was idle).
    pub(crate) fn watermark(&mut self, i: usize, watermark: i64) {
        let input = &mut self.inputs[i];
        input.watermark = input.watermark.max(watermark);
        input.idle = false;
        self.advance();
    }

    /// Input `i` sent events: it is active again.
    pub(crate) fn active(&mut self, i: usize) {
        self.inputs[i].idle = false;
        self.idle = false;
    }

    /// Input `i` is idle: the watermark no longer waits for it.
    pub(crate) fn idle(&mut self, i: usize) {
        self.inputs[i].idle = true;
        self.advance();
    }

    /// Input `i` has ended, and is removed as the subtask's inputs swap-remove it.
    pub(crate) fn ended(&mut self, i: usize) {
        let ended = self.inputs.swap_remove(i);
        if ended.watermark < END_OF_TIME {
            self.held = Some(self.held.map_or(ended.watermark, |held| held.min(ended.watermark)));
        }
        self.advance();
    }

    fn advance(&mut self) {
        let active = self.inputs.iter().filter(|input| !input.idle).map(|input| input.watermark);
        let (watermark, all_idle) = match active.chain(self.held).min() {
            Some(min) => (min, false),
            None => (self.inputs.iter().map(|input| input.watermark).max().unwrap_or(NO_WATERMARK), true),
        };
        if watermark > self.current {
            self.current = watermark;
            self.outputs.push_back(EventTime::Watermark(watermark));
        }
        let idle = all_idle && !self.inputs.is_empty();
        if idle && !self.idle {
            self.outputs.push_back(EventTime::Idle);
        }
        self.idle = idle;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Event;

    fn batch(timestamps: &[i64]) -> EventBatch {
        let mut batch = EventBatch::default();
        for &t in timestamps {
            batch.push(Event { key: None, value: b"x", timestamp: Some(t) });
        }
        batch
    }

    #[test]
    fn a_generator_trails_the_highest_timestamp_by_the_out_of_orderness() {
        let spec = WatermarkSpec { out_of_orderness: Duration::from_secs(5), idle_timeout: None };
        let mut generator = WatermarkGenerator::new(spec);
        assert_eq!(generator.observe(&batch(&[10_000, 12_000, 11_000])), Some(6_999));
        assert_eq!(generator.observe(&batch(&[9_000])), None, "never back");
        assert_eq!(generator.observe(&batch(&[])), None);
        assert_eq!(generator.observe(&batch(&[20_000])), Some(14_999));
        assert!(!generator.became_idle(Instant::now() + Duration::from_secs(3600)), "no idle timeout");
    }

    #[test]
    fn a_generator_says_idle_once_per_spell() {
        let spec = WatermarkSpec { out_of_orderness: Duration::ZERO, idle_timeout: Some(Duration::from_secs(1)) };
        let mut generator = WatermarkGenerator::new(spec);
        let later = Instant::now() + Duration::from_secs(2);
        assert!(!generator.became_idle(Instant::now()));
        assert!(generator.became_idle(later));
        assert!(!generator.became_idle(later), "once per spell");
        generator.observe(&batch(&[1]));
        assert!(generator.became_idle(Instant::now() + Duration::from_secs(5)));
    }

    #[test]
    fn the_valve_takes_the_minimum_of_active_inputs_and_never_goes_back() {
        let mut valve = WatermarkValve::new(2);
        let mut step = |change: &dyn Fn(&mut WatermarkValve)| {
            change(&mut valve);
            std::iter::from_fn(|| valve.output()).collect::<Vec<_>>()
        };
        use EventTime::{Idle, Watermark};
        assert_eq!(step(&|v| v.watermark(0, 100)), [], "input 1 has none yet");
        assert_eq!(step(&|v| v.watermark(1, 50)), [Watermark(50)]);
        assert_eq!(step(&|v| v.watermark(1, 200)), [Watermark(100)]);
        assert_eq!(step(&|v| v.idle(0)), [Watermark(200)], "an idle input is left out");
        assert_eq!(step(&|v| v.watermark(0, 150)), [], "an input back from idleness does not pull it back");
        assert_eq!(step(&|v| v.idle(0)), []);
        assert_eq!(step(&|v| v.watermark(1, 300)), [Watermark(300)]);
        assert_eq!(step(&|v| v.idle(1)), [Idle], "every input idle: the subtask is idle");
        assert_eq!(step(&|v| v.idle(1)), []);
        assert_eq!(step(&|v| v.watermark(1, 400)), [Watermark(400)]);
        assert_eq!(step(&|v| v.ended(1)), [], "input 1 ended at 400, not at the end of time: it holds 400");
        assert_eq!(step(&|v| v.watermark(0, END_OF_TIME)), [], "held");
    }

    #[test]
    fn an_input_that_ends_before_the_end_of_time_holds_the_watermark_where_it_left_it() {
        // A stop without drain: one input's source stopped at the savepoint's barrier, the
        // other's had ended (at the end of time). Nothing may fire after the barrier.
        let mut valve = WatermarkValve::new(2);
        valve.watermark(0, 100);
        valve.watermark(1, END_OF_TIME);
        assert_eq!(valve.output(), Some(EventTime::Watermark(100)));
        valve.ended(0);
        assert_eq!(valve.output(), None, "not the end of time of input 1");
        valve.ended(0);
        assert_eq!(valve.output(), None);
        // Inputs that end at the end of time hold nothing back.
        let mut valve = WatermarkValve::new(2);
        valve.watermark(0, END_OF_TIME);
        valve.ended(0);
        valve.watermark(0, 7);
        assert_eq!(valve.output(), Some(EventTime::Watermark(7)));
    }

    #[test]
    fn when_every_input_goes_idle_the_highest_watermark_counts() {
        // An input that went idle before the other sent its watermarks held the minimum back;
        // once both are idle nothing holds it back (Flink passes the highest on too).
        let mut valve = WatermarkValve::new(2);
        valve.watermark(1, 2498);
        valve.idle(1);
        assert_eq!(valve.output(), None, "input 0 is active with no watermark");
        valve.idle(0);
        assert_eq!(valve.output(), Some(EventTime::Watermark(2498)));
        assert_eq!(valve.output(), Some(EventTime::Idle));
        assert_eq!(valve.output(), None);
    }
}
