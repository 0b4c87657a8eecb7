//! The loops one subtask runs, a source's, an operator's and a sink's ([`source`], [`operator`],
//! [`sink`]), and a subtask's part of a checkpoint ([`checkpoint`]).
//!
//! They reach the rest of a run only through [`TaskContext`] (what the checkpoint coordinator
//! asks, where reports go) and the [`Input`] and [`Output`] streams, so an adapter that is not
//! weir's executor can drive them: weir's threads and channels (`executor/`, `channel.rs`) are
//! one implementation of these traits, as timely-dataflow steps a worker apart from spawning it.
mod checkpoint;
mod operator;
mod sink;
mod source;

use std::time::Duration;

pub(crate) use operator::run_operator;
pub(crate) use sink::{SinkDriver, run_sink};
pub(crate) use source::{SourceSettings, run_source};

use super::batch::EventBatch;
use super::handover::Handover;
use super::snapshot::{StateSnapshot, TaskAck};
use super::task::TaskError;
use super::watermarks::EventTime;

/// What a subtask knows of its run, and where it reports.
pub(crate) trait TaskContext: Send + Sync {
    /// What the checkpoint coordinator asks of subtasks now.
    fn barriers(&self) -> BarrierRequests;
    /// Counts the changes a waiting subtask wakes up for: read it before
    /// [`TaskContext::barriers`], then wait with it in [`TaskContext::wait_for_news`].
    fn news_seen(&self) -> u64;
    /// Waits until something changes after `seen`: a barrier requested, a stop called off, the
    /// end reached, a failure or a cancel.
    fn wait_for_news(&self, seen: u64);
    /// True once the subtask must stop: the job is canceled, or the attempt failed.
    fn cancelled(&self) -> bool;
    /// Tells the coordinator (or the uploader) what the subtask did.
    fn report(&self, report: Report);
    /// Where a stop that hands over leaves operator state and source positions.
    fn handover(&self) -> Option<&Handover>;
    /// Whether barrier `id` is a savepoint's or the job's final one: a sink holds nothing back
    /// at it.
    fn lasting(&self, id: u64) -> bool;
    /// Where operators' input is recorded when a trial asks for it.
    fn recent(&self) -> Option<&crate::runtime::RecentInput> {
        None
    }
    /// Where shadow runs of operators are asked for.
    fn shadows(&self) -> Option<&crate::runtime::shadow::Shadows> {
        None
    }
}

/// What the checkpoint coordinator asks of subtasks at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BarrierRequests {
    /// The latest barrier sources are to inject (0: none yet).
    pub(crate) requested: u64,
    /// The last barrier of earlier runs: checkpoint ids continue from them, so every barrier
    /// after this one is this run's to inject, however late a subtask starts.
    pub(crate) before_run: u64,
    /// The barrier of a stop-with-savepoint under way (0: none): sources stop after it.
    pub(crate) stop_at: u64,
    /// That stop drains: sources send the end of time before its barrier.
    pub(crate) draining: bool,
    /// That stop hands operator state and source positions over to the next run.
    pub(crate) handing_over: bool,
    /// The checkpoint or savepoint that ends the job has completed: waiting sources end.
    pub(crate) ended: bool,
    /// The latest checkpoint that completed (0: none yet).
    pub(crate) completed: u64,
}

/// What a subtask tells the coordinator.
pub(crate) enum Report {
    /// It has done its part of barrier n.
    Ack(u64, TaskAck),
    /// Its snapshots of barrier n (one per part of its key groups), to store, then acknowledge
    /// with the ack.
    Upload(u64, Vec<StateSnapshot>, TaskAck),
    /// A source is exhausted.
    SourceFinished,
    /// It failed (a sink chained into an operator's thread reports its own failures).
    Failed(TaskError),
}

/// The streams into one subtask, merged, with barriers aligned.
pub(crate) trait Input {
    /// The next batch or aligned barrier, waiting for one.
    fn recv(&mut self) -> Result<Received, StreamError>;
    /// The same, or `None` at once when nothing is ready.
    fn try_recv(&mut self) -> Result<Option<Received>, StreamError>;
    /// The same, or `None` once `deadline` has passed with nothing ready.
    fn recv_deadline(&mut self, deadline: std::time::Instant) -> Result<Option<Received>, StreamError>;
    /// How long the last aligned barrier waited from its first input to its last.
    fn alignment(&self) -> Duration;
}

/// What an [`Input`] delivers.
pub(crate) enum Received {
    /// A batch, shared with the other vertices reading the same stream (read-only), and the
    /// index of the subtask's input it came from (its vertex's inputs, in the job file's order).
    Batch(std::sync::Arc<EventBatch>, usize),
    /// Barrier n has arrived on every live input (aligned).
    Barrier(u64),
    /// The subtask's watermark over its inputs advanced, or every input is idle.
    Time(EventTime),
    /// Every input has ended.
    Ended,
}

/// Where one subtask sends its output.
pub(crate) trait Output {
    /// Sends a batch of its main output downstream.
    fn send(&mut self, batch: EventBatch) -> Result<(), StreamError>;
    /// Sends a batch of side output `output` (1 and up) to the vertices reading it.
    fn send_side(&mut self, _output: u8, _batch: EventBatch) -> Result<(), StreamError> {
        Ok(())
    }
    /// Sends what routing has held back to fill batches.
    fn flush(&mut self) -> Result<(), StreamError>;
    /// Flushes, then sends barrier `id` on.
    fn barrier(&mut self, id: u64) -> Result<(), StreamError>;
    /// Flushes, then sends event time's progress on.
    fn time(&mut self, time: EventTime) -> Result<(), StreamError>;
    /// Flushes, then tells downstream that no more events come.
    fn end(&mut self) -> Result<(), StreamError>;
    /// True when nothing is downstream (the last operator, whose sinks are chained into it).
    fn is_empty(&self) -> bool;
}

/// Why a subtask must stop sending or receiving.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// A peer vanished: another subtask failed and the job is going down. Not a cause of its own.
    Disconnected,
    /// An event without a key reached a `hash` edge into `target`.
    MissingKey { target: std::sync::Arc<str> },
}

/// Why a subtask loop ended early.
pub(crate) enum Stop {
    /// A peer vanished or the failure is reported already (another subtask failed, the job was
    /// cancelled, or a chained sink reported its own): this subtask stops without a cause.
    Quiet,
    /// This subtask failed.
    Failed(String),
}

impl From<String> for Stop {
    fn from(cause: String) -> Self {
        Stop::Failed(cause)
    }
}

impl From<StreamError> for Stop {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Disconnected => Stop::Quiet,
            StreamError::MissingKey { target } => Stop::Failed(format!(
                "an event without a key reached '{target}', which reads its input by key (input = \"hash\"); \
                 set a key upstream, for example with a key_by operator"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The runner driven by an adapter that is not weir's executor: no threads, no channels.
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::runtime::metrics::Counters;
    use crate::runtime::{Emitted, Operator, Position, Source, SubtaskInfo};

    /// Records what subtasks report; asks for the barriers in `.1`.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>, BarrierRequests);

    impl TaskContext for Recorder {
        fn barriers(&self) -> BarrierRequests {
            self.1
        }
        fn news_seen(&self) -> u64 {
            0
        }
        fn wait_for_news(&self, _seen: u64) {}
        fn cancelled(&self) -> bool {
            false
        }
        fn report(&self, report: Report) {
            let text = match report {
                Report::Ack(id, ack) => format!("ack {id} by {}", ack.uid),
                Report::Upload(id, _, ack) => format!("upload {id} by {}", ack.uid),
                Report::SourceFinished => "source finished".to_string(),
                Report::Failed(e) => format!("failed: {e}"),
            };
            self.0.lock().unwrap().push(text);
        }
        fn handover(&self) -> Option<&Handover> {
            None
        }
        fn lasting(&self, _id: u64) -> bool {
            false
        }
    }

    struct Scripted(VecDeque<Received>);

    impl Input for Scripted {
        fn recv(&mut self) -> Result<Received, StreamError> {
            Ok(self.0.pop_front().unwrap_or(Received::Ended))
        }
        fn try_recv(&mut self) -> Result<Option<Received>, StreamError> {
            self.recv().map(Some)
        }
        fn recv_deadline(&mut self, _deadline: std::time::Instant) -> Result<Option<Received>, StreamError> {
            self.recv().map(Some)
        }
        fn alignment(&self) -> Duration {
            Duration::ZERO
        }
    }

    /// What an operator sent, as text: values, `|n` for barriers, `.` for the end.
    #[derive(Default)]
    struct Collected(String);

    impl Output for Collected {
        fn send(&mut self, batch: EventBatch) -> Result<(), StreamError> {
            batch.iter().for_each(|e| self.0.push_str(&String::from_utf8_lossy(e.value)));
            Ok(())
        }
        fn flush(&mut self) -> Result<(), StreamError> {
            Ok(())
        }
        fn barrier(&mut self, id: u64) -> Result<(), StreamError> {
            self.0.push_str(&format!("|{id}"));
            Ok(())
        }
        fn time(&mut self, time: EventTime) -> Result<(), StreamError> {
            match time {
                EventTime::Watermark(w) => self.0.push_str(&format!("@{w}")),
                EventTime::Idle => self.0.push_str("@idle"),
            }
            Ok(())
        }
        fn end(&mut self) -> Result<(), StreamError> {
            self.0.push('.');
            Ok(())
        }
        fn is_empty(&self) -> bool {
            false
        }
    }

    /// Emits each value twice; keeps no state.
    struct Twice;

    impl Operator for Twice {
        fn process(&mut self, _input: usize, batch: &EventBatch, out: &mut Emitted) -> Result<(), String> {
            for event in batch.iter() {
                out.main.push(event);
                out.main.push(event);
            }
            Ok(())
        }
        fn snapshot(&mut self) -> Result<Vec<StateSnapshot>, String> {
            Ok(Vec::new())
        }
    }

    fn batch(values: &[&str]) -> Received {
        let mut batch = EventBatch::default();
        values.iter().for_each(|v| batch.push_with(None, None, |b| b.extend_from_slice(v.as_bytes())));
        Received::Batch(std::sync::Arc::new(batch), 0)
    }

    fn subtask(uid: &str) -> SubtaskInfo {
        SubtaskInfo {
            uid: uid.into(),
            index: 0,
            parallelism: 1,
            max_parallelism: 128,
            attempt: 0,
            interrupt: Default::default(),
        }
    }

    #[test]
    fn an_operator_runs_without_the_executor() {
        let info = subtask("twice");
        let script = [batch(&["a", "b"]), Received::Barrier(7), batch(&["c"]), Received::Ended];
        let mut input = Scripted(script.into());
        let (mut output, ctx) = (Collected::default(), Recorder::default());
        let result =
            run_operator(Box::new(Twice), &info, &mut input, &mut output, Vec::new(), None, &ctx, &Counters::default());
        assert!(result.is_ok());
        assert_eq!(output.0, "aabb|7cc.");
        assert_eq!(*ctx.0.lock().unwrap(), ["ack 7 by twice"]);
    }

    /// Sends one value per poll, `n` in all.
    struct Counting(u32);

    impl Source for Counting {
        fn poll(&mut self, out: &mut EventBatch, _max: usize) -> Result<bool, String> {
            out.push_with(None, None, |b| b.extend_from_slice(self.0.to_string().as_bytes()));
            self.0 -= 1;
            Ok(self.0 > 0)
        }
        fn position(&self) -> Position {
            Position::default()
        }
    }

    /// A source created slowly (a Kafka client may take seconds) injects the barriers requested
    /// before it started, and only this run's: its alignment downstream would wait for them
    /// forever (seen under load as a Kafka job that never completed a checkpoint).
    #[test]
    fn a_source_started_late_injects_the_barriers_requested_before_it_started() {
        // The job has ended: an exhausted source waits for nothing more.
        let asked = BarrierRequests { requested: 9, before_run: 7, ended: true, ..BarrierRequests::default() };
        let (mut output, ctx) = (Collected::default(), Recorder(Mutex::default(), asked));
        let settings = SourceSettings::default();
        let result =
            run_source(Box::new(Counting(2)), &subtask("late"), &mut output, settings, &ctx, &Counters::default());
        assert!(result.is_ok());
        assert_eq!(output.0, format!("|8|921@{}.", i64::MAX), "an exhausted source sends the end of time");
        assert_eq!(*ctx.0.lock().unwrap(), ["ack 8 by late", "ack 9 by late", "source finished"]);
    }
}
