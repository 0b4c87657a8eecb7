//! An operator subtask's loop: process each batch, hand what it emits to its chained sinks or
//! downstream, pass event time on, take its part of each aligned barrier, and at the end of a
//! handover leave its state for the next run.
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Input, Output, Received, SinkDriver, Stop, StreamError, TaskContext, checkpoint};
use crate::runtime::metrics::{Counters, clock_ns};
use crate::runtime::shadow::Shadowing;
use crate::runtime::watermarks::{END_OF_TIME, EventTime, NO_WATERMARK, WatermarkGenerator};
use crate::runtime::{Emitted, EventBatch, Operator, SubtaskInfo, WatermarkSpec, now_ms};

/// The watermarks an operator subtask sends: those of its inputs, or, when the job file asks it
/// to generate its own, those of the events it emits (Flink's timestamp assigner after an
/// operator: its input watermarks are dropped, except the end of time; idleness passes).
enum OutputTime {
    Forwarded,
    Generated(WatermarkGenerator),
}

impl OutputTime {
    /// What to send on after the subtask's input watermark or status changed.
    fn input(&self, time: EventTime) -> Option<EventTime> {
        match self {
            OutputTime::Forwarded => Some(time),
            OutputTime::Generated(_) => {
                matches!(time, EventTime::Idle | EventTime::Watermark(END_OF_TIME)).then_some(time)
            }
        }
    }

    /// Sends `out` on, then the watermark its timestamps make, if one is generated and advanced.
    fn send(&mut self, out: EventBatch, output: &mut dyn Output) -> Result<(), StreamError> {
        let watermark = match self {
            OutputTime::Generated(generator) => generator.observe(&out),
            OutputTime::Forwarded => None,
        };
        output.send(out)?;
        watermark.map_or(Ok(()), |w| output.time(EventTime::Watermark(w)))
    }
}

/// When processing time (milliseconds since the Unix epoch) reaches `ms`, on the monotonic clock.
fn instant_of(ms: i64) -> Instant {
    let wait = ms.saturating_sub(now_ms() as i64).clamp(0, 3_600_000) as u64;
    Instant::now() + Duration::from_millis(wait)
}

/// Events of `batch` at or before `watermark`: late.
fn late_events(batch: &EventBatch, watermark: i64) -> u64 {
    if watermark == NO_WATERMARK {
        return 0;
    }
    batch.iter().filter(|e| e.timestamp.is_some_and(|t| t <= watermark)).count() as u64
}

/// Advances `operator`'s time to `watermark`: fires the timers due when this advance began, a
/// batch at a time, sending what each batch emitted on (`emit`) before the next, so that a
/// million due timers neither pile their output up in memory nor keep a cancel waiting. A
/// shadow fires its own beside it, batch for batch.
fn advance(
    operator: &mut dyn Operator,
    watermark: i64,
    out: &mut Emitted,
    info: &SubtaskInfo,
    shadowing: &mut Shadowing,
    mut emit: impl FnMut(&mut Emitted) -> Result<(), Stop>,
) -> Result<(), Stop> {
    loop {
        let marks = shadowing.marks(out);
        let more = operator.advance_time(watermark, out)?;
        shadowing.advance(watermark, out, marks, &*operator);
        if !more {
            break;
        }
        emit(out)?;
        if info.interrupt.is_raised() {
            return Err(Stop::Quiet);
        }
    }
    shadowing.finish_advance(watermark, &*operator);
    Ok(())
}

/// Runs operator subtask `info` until every input has ended or the run stops. With `watermarks`,
/// it generates its own from what it emits.
#[allow(clippy::too_many_arguments)] // each is one of the subtask's own; bundling them hides nothing
pub(crate) fn run_operator(
    mut operator: Box<dyn Operator>,
    info: &SubtaskInfo,
    inputs: &mut dyn Input,
    output: &mut dyn Output,
    mut sinks: Vec<SinkDriver>,
    watermarks: Option<WatermarkSpec>,
    ctx: &dyn TaskContext,
    counters: &Counters,
) -> Result<(), Stop> {
    let mut out = Emitted::default();
    let mut shadowing = Shadowing::new();
    let mut block = false;
    let mut watermark = NO_WATERMARK;
    let mut output_time =
        watermarks.map_or(OutputTime::Forwarded, |spec| OutputTime::Generated(WatermarkGenerator::new(spec)));
    // Sends what the operator emitted to its chained sinks and downstream (after every watermark:
    // most emit nothing, and then nothing is done). Chained sinks read the main output only.
    let emit = |out: &mut Emitted,
                sinks: &mut Vec<SinkDriver>,
                output_time: &mut OutputTime,
                output: &mut dyn Output|
     -> Result<(), Stop> {
        if out.quarantined > 0 {
            counters.quarantined.fetch_add(std::mem::take(&mut out.quarantined), Ordering::Relaxed);
        }
        for (k, side) in (1u8..).zip(&mut out.side).filter(|(_, side)| !side.is_empty()) {
            counters.events_out.fetch_add(side.len() as u64, Ordering::Relaxed);
            output.send_side(k, side.take_sized())?;
        }
        let out = &mut out.main;
        if out.is_empty() {
            return Ok(());
        }
        counters.events_out.fetch_add(out.len() as u64, Ordering::Relaxed);
        for sink in sinks.iter_mut() {
            sink.write(out, ctx)?;
        }
        if output.is_empty() {
            out.clear();
        } else {
            output_time.send(out.take_sized(), output)?;
        }
        Ok(())
    };
    loop {
        let received = match (block, operator.next_processing_timer()) {
            (false, _) => inputs.try_recv()?,
            (true, None) => Some(inputs.recv()?),
            (true, Some(due)) => inputs.recv_deadline(instant_of(due))?,
        };
        let Some(received) = received else {
            if block {
                // Waited until a processing-time timer was due.
                advance(&mut *operator, watermark, &mut out, info, &mut shadowing, |out| {
                    emit(out, &mut sinks, &mut output_time, output)
                })?;
                emit(&mut out, &mut sinks, &mut output_time, output)?;
            }
            // Nothing waiting: send what routing held back before blocking for more.
            output.flush()?;
            block = true;
            continue;
        };
        match received {
            Received::Batch(batch, input) => {
                block = false;
                counters.events_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
                counters.late_events.fetch_add(late_events(&batch, watermark), Ordering::Relaxed);
                if let Some(recent) = ctx.recent() {
                    recent.record(&info.uid, input, &batch);
                }
                shadowing.keep_up(ctx.shadows(), &mut *operator, info);
                let start = clock_ns();
                let marks = shadowing.marks(&out);
                operator.process(input, &batch, &mut out)?;
                shadowing.process(input, &batch, &out, marks, &*operator);
                if operator.next_processing_timer().is_some_and(|due| due <= now_ms() as i64) {
                    advance(&mut *operator, watermark, &mut out, info, &mut shadowing, |out| {
                        emit(out, &mut sinks, &mut output_time, output)
                    })?;
                }
                let now = clock_ns();
                counters.busy_ns.fetch_add(now - start, Ordering::Relaxed);
                let _ = counters.first_batch_ns.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                counters.last_batch_ns.store(now, Ordering::Relaxed);
                emit(&mut out, &mut sinks, &mut output_time, output)?;
            }
            Received::Time(time) => {
                if let EventTime::Watermark(w) = time {
                    watermark = w;
                    counters.watermark.set(w);
                    // Timers fire before the watermark goes on: what they emit is not late.
                    let start = clock_ns();
                    advance(&mut *operator, w, &mut out, info, &mut shadowing, |out| {
                        emit(out, &mut sinks, &mut output_time, output)
                    })?;
                    counters.busy_ns.fetch_add(clock_ns() - start, Ordering::Relaxed);
                    emit(&mut out, &mut sinks, &mut output_time, output)?;
                }
                if let Some(time) = output_time.input(time) {
                    output.time(time)?;
                }
            }
            Received::Barrier(id) => {
                let alignment = inputs.alignment();
                checkpoint::at_operator_barrier(id, &mut *operator, info, alignment, &mut sinks, output, ctx)?;
            }
            Received::Ended => {
                for sink in &mut sinks {
                    sink.finish(ctx)?;
                }
                output.end()?;
                if let Some(handover) = ctx.handover().filter(|_| ctx.barriers().handing_over) {
                    for state in operator.into_state() {
                        handover.put(&info.uid, info.index, state);
                    }
                }
                return Ok(());
            }
        }
    }
}
