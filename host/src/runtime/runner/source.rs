//! A source subtask's loop: poll, send, generate watermarks, and inject the barriers the
//! coordinator asks for between two polls, each at the position the source has reached.
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Output, Report, Stop, TaskContext};
use crate::runtime::metrics::Counters;
use crate::runtime::snapshot::TaskAck;
use crate::runtime::watermarks::{END_OF_TIME, EventTime, WatermarkGenerator};
use crate::runtime::{BATCH_SIZE, EventBatch, Position, Source, SourcePosition, SubtaskInfo, WatermarkSpec};

/// Barrier positions a source keeps for [`Source::checkpoint_completed`] while checkpoints fail.
const MAX_UNCOMPLETED: usize = 64;

/// Where source subtask `info` stands now, as a checkpoint or a handover records it.
fn position_of(info: &SubtaskInfo, source: &dyn Source) -> SourcePosition {
    SourcePosition { uid: info.uid.to_string(), subtask: info.index, position: source.position() }
}

/// A source subtask's side of the barriers: it injects each requested barrier once, at the
/// source's position between two polls.
struct Barriers<'a> {
    info: &'a SubtaskInfo,
    ctx: &'a dyn TaskContext,
    /// The last barrier injected. Checkpoint ids continue from earlier runs; every barrier
    /// requested in this run is injected, also one requested while the source was still being
    /// created (a Kafka source may take seconds): skipping it would leave its alignment
    /// downstream waiting forever.
    injected: u64,
    /// Positions of the barriers injected since the last completed checkpoint, oldest first.
    uncompleted: VecDeque<(u64, Position)>,
}

impl Barriers<'_> {
    /// Injects every barrier requested since the last one, in order (two may be requested
    /// between polls, say a checkpoint and a savepoint; each must reach every sink): everything
    /// sent so far is before them, everything after is after them.
    fn inject(&mut self, output: &mut dyn Output, source: &dyn Source) -> Result<(), Stop> {
        let asked = self.ctx.barriers();
        for id in self.injected + 1..=asked.requested {
            let position = position_of(self.info, source);
            if id == asked.stop_at && asked.draining {
                // Drained: every event-time timer downstream fires before the stop's barrier.
                output.time(EventTime::Watermark(END_OF_TIME))?;
            }
            output.barrier(id)?;
            self.uncompleted.push_back((id, position.position.clone()));
            if self.uncompleted.len() > MAX_UNCOMPLETED {
                self.uncompleted.pop_front(); // checkpoints keep failing: a later one will do
            }
            self.ctx.report(Report::Ack(id, TaskAck { position: Some(position), ..TaskAck::new(self.info) }));
            self.injected = id;
        }
        Ok(())
    }

    /// Tells `source` where the latest completed checkpoint found it, once per checkpoint.
    fn notify_completed(&mut self, source: &mut dyn Source) {
        let completed = self.ctx.barriers().completed;
        let mut latest = None;
        while self.uncompleted.front().is_some_and(|(id, _)| *id <= completed) {
            latest = self.uncompleted.pop_front();
        }
        if let Some((_, position)) = latest {
            source.checkpoint_completed(&position);
        }
    }

    /// Waits, still injecting barriers when asked, until the checkpoint or savepoint that ends
    /// the job has completed (true), or the job is cancelled or, when `stopping`, the stop's
    /// savepoint failed (false).
    fn wait_for_the_end(&mut self, output: &mut dyn Output, source: &dyn Source, stopping: bool) -> Result<bool, Stop> {
        output.flush()?;
        loop {
            let seen = self.ctx.news_seen();
            let asked = self.ctx.barriers();
            if asked.ended {
                return Ok(true);
            }
            if self.ctx.cancelled() || (stopping && asked.stop_at == 0) {
                return Ok(false);
            }
            self.inject(output, source)?;
            self.ctx.wait_for_news(seen);
        }
    }
}

/// How a source subtask sends: at most `rate` events per second, and with the watermarks the job
/// file asks for.
#[derive(Default)]
pub(crate) struct SourceSettings {
    pub(crate) rate: Option<f64>,
    pub(crate) watermarks: Option<WatermarkSpec>,
}

/// Runs source subtask `info` until it and every other source are exhausted (and, with
/// checkpoints, a final one has completed), it stops at a stop-with-savepoint's barrier, or the run ends. A rate-limited
/// source sends small batches (about 50 per second) on a schedule. An exhausted source sends the
/// end of time as its watermark, so that every event-time timer downstream fires before the end.
pub(crate) fn run_source(
    mut source: Box<dyn Source>,
    info: &SubtaskInfo,
    output: &mut dyn Output,
    settings: SourceSettings,
    ctx: &dyn TaskContext,
    counters: &Counters,
) -> Result<(), Stop> {
    let SourceSettings { rate, watermarks } = settings;
    let mut generator = watermarks.map(WatermarkGenerator::new);
    let max = rate.map_or(BATCH_SIZE, |r| ((r / 50.0) as usize).clamp(1, BATCH_SIZE));
    let started = Instant::now();
    let mut sent = 0u64;
    let mut batch = EventBatch::with_capacity(max, max * 64);
    let mut barriers = Barriers { info, ctx, injected: ctx.barriers().before_run, uncompleted: VecDeque::new() };
    while !ctx.cancelled() {
        barriers.inject(output, &*source)?;
        if generator.as_mut().is_some_and(|g| g.became_idle(Instant::now())) {
            output.time(EventTime::Idle)?;
        }
        let asked = ctx.barriers();
        if asked.stop_at != 0 && barriers.injected >= asked.stop_at {
            // Stop with savepoint: nothing after its barrier. For an upgrade, the next run goes
            // on from here at once; else the job ends once the savepoint is stored, and goes on
            // if it fails.
            if let Some(handover) = ctx.handover().filter(|_| asked.handing_over) {
                handover.put_position(asked.stop_at, position_of(info, &*source));
                return Ok(output.end()?);
            }
            if barriers.wait_for_the_end(output, &*source, true)? {
                return Ok(output.end()?);
            }
            continue;
        }
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                output.flush()?;
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
                continue;
            }
        }
        let more = source.poll(&mut batch, max)?;
        barriers.notify_completed(&mut *source);
        if let Some(status) = source.status()
            && let Ok(mut reported) = counters.status.lock()
        {
            *reported = Some(status);
        }
        sent += batch.len() as u64;
        counters.events_out.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let watermark = generator.as_mut().and_then(|g| g.observe(&batch));
        output.send(batch.take_sized())?;
        if let Some(watermark) = watermark {
            counters.watermark.set(watermark);
            output.time(EventTime::Watermark(watermark))?;
        }
        if !more {
            counters.watermark.set(END_OF_TIME);
            output.time(EventTime::Watermark(END_OF_TIME))?;
            // Exhausted, it still takes part in checkpoints and savepoints while other sources
            // run, and, with checkpoints, until one taken after every source finished has
            // completed: that one commits the sinks' last output. (Ending at once left a
            // savepoint of a job whose other sources ran waiting for its acknowledgement.)
            ctx.report(Report::SourceFinished);
            if !barriers.wait_for_the_end(output, &*source, false)? {
                return Ok(());
            }
            return Ok(output.end()?);
        }
    }
    Ok(())
}
