//! The checkpoint coordinator of one run, and the uploader that stores snapshots off the subtask
//! threads.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::JobFailure;
use super::control::{Ack, Control, TaskAck, Upload};
use crate::runtime::metrics::JobMetrics;
use crate::runtime::now_ms;
use crate::runtime::{
    CheckpointConfig, CheckpointSink, Completed, SavepointRequest, SinkCommitted, SinkFactory, SourcePosition,
    StateFile,
};

/// Stores snapshots as operators hand them over, so that their threads go on processing.
pub(super) fn upload(uploads: Receiver<Option<Upload>>, control: &Control) {
    while let Ok(Some(Upload { id, snapshot, mut ack })) = uploads.recv() {
        // A checkpoint abandoned meanwhile needs nothing stored.
        let Some(sink) = control.target(id) else { continue };
        let started = Instant::now();
        match sink.write_state(id, &ack.uid, ack.subtask, snapshot) {
            Ok(file) => {
                ack.stats.upload = started.elapsed();
                ack.stats.state_size = file.size;
                ack.state = Some(file);
                control.ack(Ack::Task(id, ack));
            }
            Err(cause) => control.ack(Ack::Failed(id, cause)),
        }
    }
}

/// A checkpoint or savepoint waiting for acknowledgements.
pub(super) struct Pending {
    pub(super) started: Instant,
    pub(super) sources: Vec<SourcePosition>,
    pub(super) states: Vec<StateFile>,
    pub(super) acks: usize,
    /// Where it is stored: the job's checkpoint storage, or a savepoint directory.
    pub(super) sink: Arc<dyn CheckpointSink>,
    /// For a savepoint: who asked for it.
    pub(super) savepoint: Option<SavepointRequest>,
}

/// Triggers checkpoints (every `interval`, at most `max-concurrent` at once, `min-pause` apart)
/// and the savepoints asked for, completes each once every subtask has acknowledged it, then has
/// the sinks publish their output; abandons those that fail or exceed `timeout`, and fails the
/// job after more than `tolerable-failures` checkpoint failures in a row (a failed savepoint is
/// reported to whoever asked for it instead). Once every source is exhausted it triggers a
/// final checkpoint at once, and lets the sources end when one completes; a stop's savepoint
/// ends them the same way.
pub(super) struct Coordinator<'a> {
    /// Periodic checkpoints, when on.
    pub(super) config: Option<&'a CheckpointConfig>,
    pub(super) control: &'a Control,
    pub(super) metrics: &'a JobMetrics,
    /// Sinks, by uid: they publish what a completed checkpoint covers, and say what they have
    /// committed for its metadata.
    pub(super) sinks: Vec<(Arc<str>, Arc<dyn SinkFactory>)>,
    /// False once a handover stop is triggered: the next run's sinks publish from then on.
    pub(super) publishing: bool,
    /// Acknowledgements that complete a checkpoint: one per source, operator and sink subtask.
    pub(super) expected: usize,
    pub(super) sources: usize,
    pub(super) sources_finished: usize,
    pub(super) pending: BTreeMap<u64, Pending>,
    pub(super) next_trigger: Instant,
    /// When the last checkpoint completed or failed, for `min-pause`.
    pub(super) last_end: Option<Instant>,
    pub(super) consecutive_failures: u32,
    /// The checkpoint triggered after every source finished, while it is pending.
    pub(super) final_pending: Option<u64>,
}

/// How long a savepoint may take when the job has no checkpoint `timeout`.
pub(super) const SAVEPOINT_TIMEOUT: Duration = Duration::from_secs(600);

impl Coordinator<'_> {
    pub(super) fn run(mut self, acks: Receiver<Ack>, savepoints: Receiver<SavepointRequest>) {
        loop {
            let timeout = self.wake_at().saturating_duration_since(Instant::now());
            let result = crossbeam_channel::select! {
                recv(acks) -> ack => match ack {
                    Ok(Ack::JobEnded) | Err(_) => break,
                    Ok(Ack::SourceFinished) => {
                        self.sources_finished += 1;
                        Ok(())
                    }
                    Ok(Ack::Task(id, ack)) => self.acknowledged(id, ack),
                    Ok(Ack::Failed(id, cause)) => self.failed(id, cause),
                },
                recv(savepoints) -> request => {
                    if let Ok(request) = request {
                        self.savepoint(request);
                    }
                    Ok(())
                },
                default(timeout) => Ok(()),
            };
            if let Err(failure) = result.and_then(|_| self.tick()) {
                self.control.fail(failure);
                break;
            }
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            if let Some(request) = pending.savepoint {
                (request.done)(Err("the job stopped before the savepoint completed".to_string()));
            }
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.config.map_or(SAVEPOINT_TIMEOUT, |c| c.timeout)
    }

    /// When something is due: a pending checkpoint's timeout or the next trigger.
    pub(super) fn wake_at(&self) -> Instant {
        let timeouts = self.pending.values().map(|p| p.started + self.timeout());
        let trigger =
            self.config.filter(|c| self.checkpoints_pending() < c.max_concurrent as usize).map(|c| self.trigger_due(c));
        timeouts.chain(trigger).min().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    pub(super) fn checkpoints_pending(&self) -> usize {
        self.pending.values().filter(|p| p.savepoint.is_none()).count()
    }

    pub(super) fn trigger_due(&self, config: &CheckpointConfig) -> Instant {
        let after_pause = self.last_end.map(|end| end + config.min_pause);
        after_pause.map_or(self.next_trigger, |p| p.max(self.next_trigger))
    }

    /// Expires overdue checkpoints and triggers the next one when it is due.
    pub(super) fn tick(&mut self) -> Result<(), JobFailure> {
        let now = Instant::now();
        let overdue: Vec<u64> =
            self.pending.iter().filter(|(_, p)| now >= p.started + self.timeout()).map(|(&id, _)| id).collect();
        for id in overdue {
            let acks = self.pending.get(&id).map_or(0, |p| p.acks);
            let timeout = humantime::format_duration(self.timeout());
            let cause = format!("expired after {timeout} with {acks} of {} acknowledgements", self.expected);
            self.failed(id, cause)?;
        }
        let Some(config) = self.config.filter(|_| !self.control.cancelled()) else { return Ok(()) };
        if self.sources_finished == self.sources {
            if self.final_pending.is_none() {
                self.final_pending = Some(self.trigger(config.sink.clone(), None));
            }
        } else if self.checkpoints_pending() < config.max_concurrent as usize && now >= self.trigger_due(config) {
            self.trigger(config.sink.clone(), None);
            self.next_trigger = now + config.interval;
        }
        Ok(())
    }

    /// Starts barrier n for a checkpoint or a savepoint; returns n.
    pub(super) fn trigger(&mut self, sink: Arc<dyn CheckpointSink>, savepoint: Option<SavepointRequest>) -> u64 {
        let id = self.control.requested.load(Ordering::SeqCst) + 1;
        if let Ok(mut targets) = self.control.targets.lock() {
            targets.insert(id, sink.clone());
        }
        if savepoint.as_ref().is_some_and(|s| s.stop) {
            if savepoint.as_ref().is_some_and(|s| s.handover) {
                self.control.handing_over.store(true, Ordering::SeqCst);
                // The next run publishes what this stop covers when it opens the sinks, while
                // this savepoint may still be stored behind it: the sinks are the next run's now.
                self.publishing = false;
                if let Some(handover) = &self.control.handover {
                    handover.put_sinks(self.sinks_committed(id));
                }
            }
            self.control.stop_at.store(id, Ordering::SeqCst);
        }
        let pending =
            Pending { started: Instant::now(), sources: Vec::new(), states: Vec::new(), acks: 0, sink, savepoint };
        self.pending.insert(id, pending);
        self.metrics.checkpoint_stats(|s| s.triggered(id, now_ms(), self.expected as u64));
        self.control.requested.store(id, Ordering::SeqCst);
        self.control.announce();
        id
    }

    /// A savepoint asked for: its barrier goes out at once, whatever the checkpoint schedule.
    pub(super) fn savepoint(&mut self, request: SavepointRequest) {
        if self.control.cancelled() || self.control.stop_at.load(Ordering::SeqCst) != 0 {
            (request.done)(Err("the job is stopping".to_string()));
            return;
        }
        self.trigger(request.sink.clone(), Some(request));
    }

    /// Forgets barrier `id`: the uploader stores nothing more of it.
    pub(super) fn end(&mut self, id: u64) -> Option<Pending> {
        if let Ok(mut targets) = self.control.targets.lock() {
            targets.remove(&id);
        }
        self.pending.remove(&id)
    }

    pub(super) fn acknowledged(&mut self, id: u64, ack: TaskAck) -> Result<(), JobFailure> {
        // Acknowledgements of a checkpoint that is no longer pending are ignored.
        let Some(p) = self.pending.get_mut(&id) else { return Ok(()) };
        self.metrics.checkpoint_stats(|s| s.acknowledged(id, &ack.uid, now_ms(), &ack.stats));
        p.acks += 1;
        p.sources.extend(ack.position);
        p.states.extend(ack.state);
        if p.acks < self.expected {
            return Ok(());
        }
        let Some(Pending { started, sources, states, sink, savepoint, .. }) = self.end(id) else { return Ok(()) };
        let completed = Completed { sources, states, sinks: self.sinks_committed(id) };
        if let Err(cause) = sink.complete(id, completed) {
            return self.abandon(id, started, savepoint, cause);
        }
        self.metrics.checkpoint_stats(|s| s.completed(id, started.elapsed()));
        let savepoint_stop = savepoint.as_ref().map(|s| s.stop);
        let stop = savepoint_stop == Some(true);
        match savepoint {
            Some(request) => (request.done)(Ok(id)),
            None => {
                self.last_end = Some(Instant::now());
                self.consecutive_failures = 0;
                // Older checkpoints still pending are covered by this one (savepoints are not).
                let older: Vec<u64> =
                    self.pending.range(..id).filter(|(_, p)| p.savepoint.is_none()).map(|(&old, _)| old).collect();
                for old in older {
                    self.end(old);
                    let cause = format!("subsumed by checkpoint {id}");
                    self.metrics.checkpoint_stats(|s| s.failed(old, Duration::ZERO, &cause));
                }
            }
        }
        // Sinks publish at checkpoints and at a stop's savepoint. A savepoint the job goes on
        // after is not a point restarts resume from: what it covers is published with the next
        // checkpoint, so that a failure before then cannot leave output committed twice.
        let publishes = self.publishing && savepoint_stop.is_none_or(|stop| stop);
        for (_, sink) in self.sinks.iter().filter(|_| publishes) {
            sink.commit(id).map_err(|cause| JobFailure::Checkpoint {
                id,
                cause: format!("it completed, but a sink cannot publish its output: {cause}"),
            })?;
        }
        if stop || self.final_pending.is_some_and(|f| id >= f) {
            self.control.final_checkpoint_done.store(true, Ordering::SeqCst);
            self.control.announce();
        }
        Ok(())
    }

    /// What each sink has committed once barrier `id` is.
    pub(super) fn sinks_committed(&self, id: u64) -> Vec<SinkCommitted> {
        let committed = |(uid, sink): &(Arc<str>, Arc<dyn SinkFactory>)| {
            Some(SinkCommitted { uid: uid.to_string(), committed: sink.committed(id)? })
        };
        self.sinks.iter().filter_map(committed).collect()
    }

    pub(super) fn failed(&mut self, id: u64, cause: String) -> Result<(), JobFailure> {
        match self.end(id) {
            Some(p) => self.abandon(id, p.started, p.savepoint, cause),
            None => Ok(()),
        }
    }

    /// Counts barrier `id`, triggered at `started`, as failed: a savepoint is reported to its
    /// requester (and a stop is called off); a checkpoint counts against `tolerable-failures`.
    pub(super) fn abandon(
        &mut self,
        id: u64,
        started: Instant,
        savepoint: Option<SavepointRequest>,
        cause: String,
    ) -> Result<(), JobFailure> {
        self.metrics.checkpoint_stats(|s| s.failed(id, started.elapsed(), &cause));
        if let Some(request) = savepoint {
            if request.stop {
                self.control.stop_at.store(0, Ordering::SeqCst);
                self.control.announce();
            }
            tracing::warn!("savepoint {id} failed: {cause}");
            (request.done)(Err(cause));
            return Ok(());
        }
        self.last_end = Some(Instant::now());
        self.consecutive_failures += 1;
        if self.final_pending == Some(id) {
            self.final_pending = None;
        }
        let tolerable = self.config.map_or(0, |c| c.tolerable_failures);
        if self.consecutive_failures > tolerable {
            let cause = match tolerable {
                0 => cause,
                _ => format!(
                    "{cause} ({} checkpoints in a row failed; tolerable-failures is {tolerable})",
                    self.consecutive_failures
                ),
            };
            return Err(JobFailure::Checkpoint { id, cause });
        }
        tracing::warn!(
            "checkpoint {id} failed: {cause} ({} of {tolerable} tolerable failures in a row)",
            self.consecutive_failures
        );
        Ok(())
    }
}
