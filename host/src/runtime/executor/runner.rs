//! The loops each subtask thread runs: a source polling and injecting barriers, an operator
//! processing batches and snapshotting at aligned barriers, a sink writing and pre-committing.
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::control::{Ack, Control, TaskAck, Upload};
use crate::key_group::key_group_range;
use crate::runtime::channel::{ChannelError, Inputs, Output, Received};
use crate::runtime::checkpoint_stats::SubtaskCheckpoint;
use crate::runtime::metrics::{Counters, JobMetrics, clock_ns};
use crate::runtime::{BATCH_SIZE, EventBatch};
use crate::runtime::{SourcePosition, SubtaskInfo, TaskError, VertexKind};

/// Why a subtask loop ended early.
pub(super) enum Stop {
    /// A peer vanished: another subtask failed or the job was cancelled, and that is the job's
    /// cause, so this subtask stops without one of its own.
    Quiet,
    /// This subtask failed.
    Failed(String),
}

impl From<String> for Stop {
    fn from(cause: String) -> Self {
        Stop::Failed(cause)
    }
}

impl From<ChannelError> for Stop {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Disconnected => Stop::Quiet,
            ChannelError::MissingKey { target } => Stop::Failed(format!(
                "an event without a key reached '{target}', which reads its input by key (input = \"hash\"); \
                 set a key upstream, for example with a key_by operator"
            )),
        }
    }
}

/// Where source subtask `info` stands now, as a checkpoint or a handover records it.
fn position_of(info: &SubtaskInfo, source: &dyn crate::runtime::Source) -> SourcePosition {
    SourcePosition { uid: info.uid.to_string(), subtask: info.index, position: source.position() }
}

/// A source subtask's side of the barriers: it injects each requested barrier once, at the
/// source's position between two polls.
pub(super) struct Barriers<'a> {
    pub(super) info: &'a SubtaskInfo,
    pub(super) control: &'a Control,
    /// The last barrier injected. Checkpoint ids continue from earlier runs: only barriers
    /// requested from now on are new.
    pub(super) injected: u64,
}

impl Barriers<'_> {
    /// Injects every barrier requested since the last one, in order (two may be requested
    /// between polls, say a checkpoint and a savepoint; each must reach every sink): everything
    /// sent so far is before them, everything after is after them.
    pub(super) fn inject(&mut self, output: &mut Output, source: &dyn crate::runtime::Source) -> Result<(), Stop> {
        let requested = self.control.requested.load(Ordering::SeqCst);
        for id in self.injected + 1..=requested {
            let position = position_of(self.info, source);
            output.barrier(id)?;
            self.control.ack(Ack::Task(id, TaskAck { position: Some(position), ..TaskAck::new(self.info) }));
            self.injected = id;
        }
        Ok(())
    }

    /// Waits, still injecting barriers when asked, until the checkpoint or savepoint that ends
    /// the job has completed (true), or the job is cancelled or, when `stopping`, the stop's
    /// savepoint failed (false).
    pub(super) fn wait_for_the_end(
        &mut self,
        output: &mut Output,
        source: &dyn crate::runtime::Source,
        stopping: bool,
    ) -> Result<bool, Stop> {
        output.flush()?;
        loop {
            let seen = self.control.news_seen();
            if self.control.final_checkpoint_done.load(Ordering::SeqCst) {
                return Ok(true);
            }
            if self.control.cancelled() || (stopping && self.control.stop_at.load(Ordering::SeqCst) == 0) {
                return Ok(false);
            }
            self.inject(output, source)?;
            // Woken by the coordinator's next barrier or the end; a cancel is seen at the timeout.
            self.control.wait_for_news(seen, Duration::from_millis(20));
        }
    }
}

pub(super) fn run_source(
    mut source: Box<dyn crate::runtime::Source>,
    info: &SubtaskInfo,
    mut output: Output,
    rate: Option<f64>,
    control: &Control,
    counters: &Counters,
) -> Result<(), Stop> {
    // A rate-limited source sends small batches (about 50 per second) on a schedule.
    let max = rate.map_or(BATCH_SIZE, |r| ((r / 50.0) as usize).clamp(1, BATCH_SIZE));
    let started = Instant::now();
    let mut sent = 0u64;
    let mut batch = EventBatch::with_capacity(max, max * 64);
    let mut barriers = Barriers { info, control, injected: control.requested.load(Ordering::SeqCst) };
    while !control.cancelled() {
        barriers.inject(&mut output, &*source)?;
        let stop_at = control.stop_at.load(Ordering::SeqCst);
        if stop_at != 0 && barriers.injected >= stop_at {
            // Stop with savepoint: nothing after its barrier. For an upgrade, the next run goes
            // on from here at once; else the job ends once the savepoint is stored, and goes on
            // if it fails.
            if let Some(handover) = control.handover.as_ref().filter(|_| control.handing_over.load(Ordering::SeqCst)) {
                handover.put_position(stop_at, position_of(info, &*source));
                return Ok(output.end()?);
            }
            if barriers.wait_for_the_end(&mut output, &*source, true)? {
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
        sent += batch.len() as u64;
        counters.events_out.fetch_add(batch.len() as u64, Ordering::Relaxed);
        output.send(std::mem::take(&mut batch))?;
        if !more {
            if control.checkpointing {
                // Exhausted, it still takes part in checkpoints until one taken after every
                // source finished has completed: that one commits the sinks' last output.
                control.ack(Ack::SourceFinished);
                if !barriers.wait_for_the_end(&mut output, &*source, false)? {
                    return Ok(());
                }
            }
            return Ok(output.end()?);
        }
    }
    Ok(())
}

/// Writes a batch to a sink and counts it.
pub(super) fn write_counted(
    sink: &mut dyn crate::runtime::Sink,
    counters: &Counters,
    metrics: &JobMetrics,
    batch: &EventBatch,
) -> Result<(), String> {
    if !batch.is_empty() {
        metrics.first_sink_event.get_or_init(crate::runtime::now_ms);
    }
    counters.events_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
    sink.write(batch)?;
    counters.events_out.fetch_add(batch.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// A sink running in its upstream operator's thread. Its failures are its own: they are reported
/// under the sink's uid, not the operator's.
pub(super) struct ChainedSink {
    pub(super) sink: Box<dyn crate::runtime::Sink>,
    pub(super) info: SubtaskInfo,
    pub(super) counters: Arc<Counters>,
    pub(super) metrics: Arc<JobMetrics>,
}

impl ChainedSink {
    pub(super) fn open(
        factory: &dyn super::SinkFactory,
        info: SubtaskInfo,
        counters: Arc<Counters>,
        metrics: Arc<JobMetrics>,
        control: &Control,
    ) -> Result<Self, Stop> {
        match factory.create(&info) {
            Ok(sink) => Ok(ChainedSink { sink, info, counters, metrics }),
            Err(cause) => Err(Self::failed(info, cause, control)),
        }
    }

    pub(super) fn failed(subtask: SubtaskInfo, cause: String, control: &Control) -> Stop {
        control.fail(TaskError { kind: VertexKind::Sink, subtask, cause });
        Stop::Quiet
    }

    pub(super) fn write(&mut self, batch: &EventBatch, control: &Control) -> Result<(), Stop> {
        write_counted(&mut *self.sink, &self.counters, &self.metrics, batch)
            .map_err(|cause| Self::failed(self.info.clone(), cause, control))
    }

    pub(super) fn finish(&mut self, control: &Control) -> Result<(), Stop> {
        self.sink.finish().map_err(|cause| Self::failed(self.info.clone(), cause, control))
    }

    pub(super) fn pre_commit(&mut self, id: u64, alignment: Duration, control: &Control) -> Result<(), Stop> {
        pre_commit(&mut *self.sink, &self.info, id, alignment, control)
            .map_err(|cause| Self::failed(self.info.clone(), cause, control))
    }
}

/// A sink's part of checkpoint `id`: pre-commit, then acknowledge.
pub(super) fn pre_commit(
    sink: &mut dyn crate::runtime::Sink,
    info: &SubtaskInfo,
    id: u64,
    alignment: Duration,
    control: &Control,
) -> Result<(), String> {
    let started = Instant::now();
    sink.pre_commit(id)?;
    let stats = SubtaskCheckpoint { alignment, sync: started.elapsed(), ..Default::default() };
    control.ack(Ack::Task(id, TaskAck { stats, ..TaskAck::new(info) }));
    Ok(())
}

pub(super) fn run_operator(
    mut operator: Box<dyn crate::runtime::Operator>,
    info: &SubtaskInfo,
    mut inputs: Inputs,
    mut output: Output,
    mut sinks: Vec<ChainedSink>,
    control: &Control,
    counters: &Counters,
) -> Result<(), Stop> {
    let mut out = EventBatch::default();
    let mut block = false;
    loop {
        match inputs.next(block)? {
            Received::Batch(batch) => {
                block = false;
                counters.events_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
                operator.process(&batch, &mut out)?;
                let now = clock_ns();
                let _ = counters.first_batch_ns.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                counters.last_batch_ns.store(now, Ordering::Relaxed);
                counters.events_out.fetch_add(out.len() as u64, Ordering::Relaxed);
                for sink in &mut sinks {
                    sink.write(&out, control)?;
                }
                if output.is_empty() {
                    out.clear();
                } else {
                    output.send(std::mem::take(&mut out))?;
                }
            }
            // Nothing waiting: send what routing held back before blocking for more.
            Received::Idle => {
                output.flush()?;
                block = true;
            }
            Received::Barrier(id) => {
                // The synchronous part: a copy of the state; storing it is the uploader's work.
                // At the stop of a handover nothing follows on this thread: the state is frozen
                // for the uploader instead of copied.
                let alignment = inputs.alignment();
                let started = Instant::now();
                let handing_over =
                    control.handing_over.load(Ordering::SeqCst) && control.stop_at.load(Ordering::SeqCst) == id;
                let snapshot = if handing_over { operator.freeze()? } else { operator.snapshot()? };
                let stats = SubtaskCheckpoint { alignment, sync: started.elapsed(), ..Default::default() };
                let ack = TaskAck { stats, ..TaskAck::new(info) };
                match snapshot {
                    Some(snapshot) => {
                        let _ = control.uploads.send(Some(Upload { id, snapshot, ack }));
                    }
                    None => control.ack(Ack::Task(id, ack)),
                }
                for sink in &mut sinks {
                    sink.pre_commit(id, alignment, control)?;
                }
                output.barrier(id)?;
            }
            Received::Ended => {
                for sink in &mut sinks {
                    sink.finish(control)?;
                }
                output.end()?;
                if let Some(handover) =
                    control.handover.as_ref().filter(|_| control.handing_over.load(Ordering::SeqCst))
                    && let Some(state) = operator.into_state()
                {
                    let key_groups = key_group_range(info.max_parallelism, info.parallelism, info.index);
                    handover.put(&info.uid, info.index, key_groups, state);
                }
                return Ok(());
            }
        }
    }
}

pub(super) fn run_sink(
    mut sink: Box<dyn crate::runtime::Sink>,
    info: &SubtaskInfo,
    mut inputs: Inputs,
    control: &Control,
    counters: &Counters,
    metrics: &JobMetrics,
) -> Result<(), Stop> {
    loop {
        match inputs.next(true)? {
            Received::Batch(batch) => write_counted(&mut *sink, counters, metrics, &batch)?,
            Received::Barrier(id) => pre_commit(&mut *sink, info, id, inputs.alignment(), control)?,
            Received::Idle => {}
            Received::Ended => return Ok(sink.finish()?),
        }
    }
}
