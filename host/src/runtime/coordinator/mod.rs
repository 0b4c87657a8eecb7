//! The checkpoint coordinator of one run, split by policy as Flink's is: [`trigger`] decides when
//! a periodic checkpoint is due, [`pending`] collects a barrier's acknowledgements, [`failures`]
//! counts failed checkpoints, [`uploader`] stores snapshots off the subtask threads. This file
//! triggers barriers, completes them, and has the sinks commit what a completed one covers
//! (carried up with the sinks' acknowledgements, as Arroyo's sinks send their commit data).
//!
//! It talks to subtasks only through the run's [`Control`]: it never sees the runner.
mod failures;
mod pending;
mod trigger;
mod uploader;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::control::{Ack, Control};
use super::metrics::JobMetrics;
use super::snapshot::TaskAck;
use super::task::JobFailure;
use super::{CheckpointConfig, CheckpointSink, Completed, SavepointRequest, SinkCommitted, SinkFactory, now_ms};
use failures::FailureCounter;
use pending::Pending;
use trigger::TriggerDecider;
pub(crate) use uploader::upload;

/// How long a savepoint may take when the job has no checkpoint `timeout`.
const SAVEPOINT_TIMEOUT: Duration = Duration::from_secs(600);

/// Triggers checkpoints and the savepoints asked for, completes each once every subtask has
/// acknowledged it, then has the sinks publish their output; abandons those that fail or exceed
/// `timeout` (a failed savepoint is reported to whoever asked for it). Once every source is
/// exhausted it triggers a final checkpoint at once, and lets the sources end when one completes;
/// a stop's savepoint ends them the same way.
pub(crate) struct Coordinator<'a> {
    control: &'a Control,
    metrics: &'a JobMetrics,
    /// Periodic checkpoints, when on.
    config: Option<&'a CheckpointConfig>,
    schedule: Option<TriggerDecider<'a>>,
    failures: FailureCounter,
    /// Sinks, by uid: they publish what a completed checkpoint covers, and say what they have
    /// committed for its metadata.
    sinks: Vec<(Arc<str>, Arc<dyn SinkFactory>)>,
    /// False once a handover stop is triggered: the next run's sinks publish from then on.
    publishing: bool,
    /// Acknowledgements that complete a checkpoint: one per source, operator and sink subtask.
    expected: usize,
    sources: usize,
    sources_finished: usize,
    pending: BTreeMap<u64, Pending>,
    /// The checkpoint triggered after every source finished, while it is pending.
    final_pending: Option<u64>,
    /// What sinks pre-committed, by barrier, until a checkpoint covering it has them commit it
    /// (kept whether or not the barrier's checkpoint completes: a later one covers it).
    uncommitted: BTreeMap<u64, Vec<(Arc<str>, serde_json::Value)>>,
}

impl<'a> Coordinator<'a> {
    /// The coordinator of a run of `expected` subtasks, `sources` of them sources.
    pub(crate) fn new(
        control: &'a Control,
        metrics: &'a JobMetrics,
        config: Option<&'a CheckpointConfig>,
        sinks: Vec<(Arc<str>, Arc<dyn SinkFactory>)>,
        expected: usize,
        sources: usize,
    ) -> Self {
        Coordinator {
            control,
            metrics,
            config,
            schedule: config.map(TriggerDecider::new),
            failures: FailureCounter::new(config.map_or(0, |c| c.tolerable_failures)),
            sinks,
            publishing: true,
            expected,
            sources,
            sources_finished: 0,
            pending: BTreeMap::new(),
            final_pending: None,
            uncommitted: BTreeMap::new(),
        }
    }

    /// Runs until every subtask has stopped (or the run fails).
    pub(crate) fn run(mut self, acks: Receiver<Ack>, savepoints: &Receiver<SavepointRequest>) {
        let never = crossbeam_channel::never();
        loop {
            let timeout = self.wake_at().saturating_duration_since(Instant::now());
            // A run that is stopping takes no more savepoint requests: after a handover it goes
            // on storing its stop's savepoint behind the next run, which takes them.
            let requests = if self.stopping() { &never } else { savepoints };
            let result = crossbeam_channel::select! {
                recv(acks) -> ack => match ack {
                    Ok(Ack::JobEnded) | Err(_) => break,
                    Ok(Ack::SourceFinished) => {
                        self.sources_finished += 1;
                        Ok(())
                    }
                    Ok(Ack::Task(id, ack)) => self.acknowledged(id, *ack),
                    Ok(Ack::Failed(id, cause)) => self.failed(id, cause),
                },
                recv(requests) -> request => {
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

    fn timeout(&self) -> Duration {
        self.config.map_or(SAVEPOINT_TIMEOUT, |c| c.timeout)
    }

    fn checkpoints_pending(&self) -> usize {
        self.pending.values().filter(|p| p.is_checkpoint()).count()
    }

    /// When something is due: a pending checkpoint's timeout or the next trigger.
    fn wake_at(&self) -> Instant {
        let timeouts = self.pending.values().map(|p| p.started + self.timeout());
        let trigger = self.schedule.as_ref().and_then(|s| s.due(self.checkpoints_pending()));
        timeouts.chain(trigger).min().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// Expires overdue checkpoints and triggers the next one when it is due.
    fn tick(&mut self) -> Result<(), JobFailure> {
        let now = Instant::now();
        let overdue: Vec<u64> =
            self.pending.iter().filter(|(_, p)| now >= p.started + self.timeout()).map(|(&id, _)| id).collect();
        for id in overdue {
            let acks = self.pending.get(&id).map_or(0, Pending::acks);
            let timeout = humantime::format_duration(self.timeout());
            let cause = format!("expired after {timeout} with {acks} of {} acknowledgements", self.expected);
            self.failed(id, cause)?;
        }
        let all_finished = self.sources_finished == self.sources;
        if self.config.is_none() && all_finished && !self.control.final_checkpoint_done.swap(true, Ordering::SeqCst) {
            // Without checkpoints there is no final one to wait for: the sources end together.
            self.control.announce();
        }
        let Some(config) = self.config.filter(|_| !self.control.cancelled()) else { return Ok(()) };
        if all_finished {
            if self.final_pending.is_none() {
                self.final_pending = Some(self.trigger(config.sink.clone(), None));
            }
        } else if self.schedule.as_ref().and_then(|s| s.due(self.checkpoints_pending())).is_some_and(|due| now >= due) {
            self.trigger(config.sink.clone(), None);
            if let Some(schedule) = &mut self.schedule {
                schedule.triggered(now);
            }
        }
        Ok(())
    }

    /// Starts barrier n for a checkpoint or a savepoint; returns n.
    fn trigger(&mut self, sink: Arc<dyn CheckpointSink>, savepoint: Option<SavepointRequest>) -> u64 {
        let id = self.control.requested.load(Ordering::SeqCst) + 1;
        if let Ok(mut targets) = self.control.targets.lock() {
            targets.insert(id, sink.clone());
        }
        // A savepoint, or the final checkpoint once every source is exhausted: sinks commit
        // everything at it, holding nothing back.
        if (savepoint.is_some() || self.sources_finished == self.sources)
            && let Ok(mut lasting) = self.control.lasting.lock()
        {
            lasting.insert(id);
        }
        // Stored before the barrier is requested (subtasks read them in the reverse order).
        if let Some(request) = savepoint.as_ref().filter(|s| s.stop) {
            self.control.draining.store(request.drain, Ordering::SeqCst);
            if request.handover {
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
        self.pending.insert(id, Pending::new(sink, savepoint));
        self.metrics.checkpoint_stats(|s| s.triggered(id, now_ms(), self.expected as u64));
        self.control.requested.store(id, Ordering::SeqCst);
        self.control.announce();
        id
    }

    /// Whether the run is ending: canceled, or stopping at a savepoint's barrier.
    fn stopping(&self) -> bool {
        self.control.cancelled() || self.control.stop_at.load(Ordering::SeqCst) != 0
    }

    /// A savepoint asked for: its barrier goes out at once, whatever the checkpoint schedule.
    fn savepoint(&mut self, request: SavepointRequest) {
        if self.stopping() {
            (request.done)(Err("the job is stopping".to_string()));
            return;
        }
        self.trigger(request.sink.clone(), Some(request));
    }

    /// Forgets barrier `id`: the uploader stores nothing more of it.
    fn end(&mut self, id: u64) -> Option<Pending> {
        if let Ok(mut targets) = self.control.targets.lock() {
            targets.remove(&id);
        }
        if let Ok(mut lasting) = self.control.lasting.lock() {
            lasting.remove(&id);
        }
        self.pending.remove(&id)
    }

    fn acknowledged(&mut self, id: u64, mut ack: TaskAck) -> Result<(), JobFailure> {
        if let Some(committable) = ack.committable.take() {
            self.uncommitted.entry(id).or_default().push((ack.uid.clone(), committable));
        }
        // Acknowledgements of a checkpoint that is no longer pending are ignored.
        let Some(pending) = self.pending.get_mut(&id) else { return Ok(()) };
        self.metrics.checkpoint_stats(|s| s.acknowledged(id, (&ack.uid, ack.subtask), now_ms(), &ack.stats));
        pending.acknowledge(ack);
        if pending.acks() < self.expected {
            return Ok(());
        }
        let Some(Pending { started, sources, states, sink, savepoint, .. }) = self.end(id) else { return Ok(()) };
        let completed = Completed { sources, states, sinks: self.sinks_committed(id) };
        if let Err(cause) = sink.complete(id, completed) {
            return self.abandon(id, started, savepoint, cause);
        }
        self.metrics.checkpoint_stats(|s| s.completed(id, started.elapsed()));
        let savepoint_stop = savepoint.as_ref().map(|s| s.stop);
        match savepoint {
            Some(request) => (request.done)(Ok(id)),
            None => {
                if let Some(schedule) = &mut self.schedule {
                    schedule.ended();
                }
                self.failures.succeeded();
                self.control.completed.fetch_max(id, Ordering::Relaxed);
                // Older checkpoints still pending are covered by this one (savepoints are not).
                let older: Vec<u64> =
                    self.pending.range(..id).filter(|(_, p)| p.is_checkpoint()).map(|(&old, _)| old).collect();
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
        if self.publishing && savepoint_stop.is_none_or(|stop| stop) {
            self.commit(id)?;
        }
        if savepoint_stop == Some(true) || self.final_pending.is_some_and(|f| id >= f) {
            self.control.final_checkpoint_done.store(true, Ordering::SeqCst);
            self.control.announce();
        }
        Ok(())
    }

    /// Has every sink publish what its subtasks pre-committed up to barrier `id`.
    fn commit(&mut self, id: u64) -> Result<(), JobFailure> {
        let later = self.uncommitted.split_off(&(id + 1));
        let covered = std::mem::replace(&mut self.uncommitted, later);
        for (uid, sink) in &self.sinks {
            let committables =
                covered.values().flatten().filter(|(sink, _)| sink == uid).map(|(_, c)| c.clone()).collect();
            sink.commit(id, committables).map_err(|cause| JobFailure::Checkpoint {
                id,
                cause: format!("it completed, but sink '{uid}' cannot publish its output: {cause}"),
            })?;
        }
        Ok(())
    }

    /// What each sink has committed once barrier `id` is.
    fn sinks_committed(&self, id: u64) -> Vec<SinkCommitted> {
        let committed = |(uid, sink): &(Arc<str>, Arc<dyn SinkFactory>)| {
            Some(SinkCommitted { uid: uid.to_string(), committed: sink.committed(id)? })
        };
        self.sinks.iter().filter_map(committed).collect()
    }

    fn failed(&mut self, id: u64, cause: String) -> Result<(), JobFailure> {
        match self.end(id) {
            Some(p) => self.abandon(id, p.started, p.savepoint, cause),
            None => Ok(()),
        }
    }

    /// Counts barrier `id`, triggered at `started`, as failed: a savepoint is reported to its
    /// requester (and a stop is called off); a checkpoint counts against `tolerable-failures`.
    fn abandon(
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
        if let Some(schedule) = &mut self.schedule {
            schedule.ended();
        }
        if self.final_pending == Some(id) {
            self.final_pending = None;
        }
        self.failures.failed(id, cause)
    }
}
