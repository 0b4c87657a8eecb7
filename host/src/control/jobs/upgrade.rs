//! Swaps of a running job's modules: the pending upgrade, the last swap kept for a rollback, and
//! the runs that follow a swap or a rollback. The run loop that calls them is `lifecycle.rs`.
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::Jobs;
use super::record::*;
use super::store::update;
use super::{Job, SavepointError, UpgradeError};
use crate::checkpoint::Restore;
use crate::checkpoint::savepoint::{SavepointFormat, SavepointSink};
use crate::control::lock;
use crate::job::{JobPlan, Modules};
use crate::runtime::{JobGraph, SavepointRequest};

/// The job as it runs next, and its graph (or why that cannot be built).
pub(super) type NextRun = (Arc<JobPlan>, Result<JobGraph, String>);

/// An upgrade waiting for the job to stop at its savepoint.
pub(super) struct PendingUpgrade {
    /// Its request id.
    pub(super) request: String,
    /// The job with the new modules (for a rollback, as it ran before the last upgrade).
    pub(super) plan: Arc<JobPlan>,
    /// The savepoint the job stops at (kept for rollback).
    pub(super) sink: Arc<SavepointSink>,
    /// The operators whose module changes.
    pub(super) uids: Vec<String>,
    /// For a rollback by hand: the savepoint of the last upgrade, to go on from.
    pub(super) rollback: Option<Arc<Restore>>,
}

/// A job's last swap of modules, kept until it is rolled back or the job ends: for a rollback by
/// hand, and, while it is watched, for rolling back by itself when the new modules fail at once.
pub(super) struct Swap {
    /// The job as it ran before.
    pub(super) previous: Arc<JobPlan>,
    /// The savepoint taken before the swap.
    pub(super) savepoint: SwapSavepoint,
    /// Until the first failure after the swap (and never for a swap an earlier server made).
    pub(super) watch: Option<SwapWatch>,
}

/// What tells whether a failure is within a swap's rollback window.
pub(super) struct SwapWatch {
    /// The upgrade's request id.
    pub(super) request: String,
    /// When the new modules started.
    pub(super) at: Instant,
    /// The operators whose module changed: the window counts their events.
    pub(super) uids: Vec<String>,
}

/// The savepoint of an upgrade.
pub(super) enum SwapSavepoint {
    /// Taken by this process (perhaps still being stored).
    Taken(Arc<SavepointSink>),
    /// Recorded in the job's record by an earlier server: its location.
    Recorded(String),
}

impl SwapSavepoint {
    /// Where it is.
    pub(super) fn location(&self) -> String {
        match self {
            SwapSavepoint::Taken(sink) => sink.location(),
            SwapSavepoint::Recorded(location) => location.clone(),
        }
    }

    /// The savepoint to roll back from, once stored.
    pub(super) fn restore(&self) -> Result<Restore, String> {
        match self {
            SwapSavepoint::Taken(sink) => sink.stored(),
            SwapSavepoint::Recorded(location) => Restore::savepoint(location, Path::new(".")),
        }
    }
}

/// Where an upgrade stands, as the job thread records it.
pub(super) enum UpgradeProgress {
    InProgress,
    /// The new code runs; the pause is known once each upgraded operator has processed a batch.
    Restarted {
        savepoint: String,
        /// The run of the job's graph with the new code (see `JobMetrics::runs`).
        run: u64,
        /// Per upgraded operator, when the old code processed its last batch (`clock_ns`).
        last_batches: Vec<(String, u64)>,
    },
    Failed {
        cause: String,
    },
    RolledBack {
        savepoint: String,
        cause: String,
    },
}

/// The run after job stopped for `upgrade`: the new plan, from the upgrade's savepoint, each
/// operator taking the state its predecessor left in place. If the new plan cannot be built, the
/// old one goes on from the same savepoint, and the upgrade is reported failed.
pub(super) fn upgraded(
    dir: Option<&Path>,
    job: &Job,
    old: Arc<JobPlan>,
    upgrade: PendingUpgrade,
    attempt: u32,
) -> NextRun {
    let PendingUpgrade { request, plan, sink, uids, rollback } = upgrade;
    if let Some(restore) = rollback {
        return rolled_back(dir, job, request, plan, restore, "asked for", attempt);
    }
    let last_batches: Vec<(String, u64)> =
        uids.iter().map(|uid| (uid.clone(), job.handles.metrics.batches_processed(uid).1)).collect();
    // Handed over in place, the job goes on at once; else from the savepoint once stored.
    let restore = match job.handles.handover.take_stopped() {
        stopped if !stopped.positions.is_empty() => Arc::new(sink.in_place(stopped)),
        _ => match sink.stored() {
            Ok(restore) => Arc::new(restore),
            Err(e) => return (old, Err(format!("the upgrade's savepoint failed: {e}"))),
        },
    };
    let handover = Some(job.handles.handover.clone());
    let savepoint = sink.location();
    let (plan, graph, status) = match plan.build_after_upgrade(attempt, Some(restore.clone()), handover.clone(), true) {
        Ok(graph) => {
            let canary_start = super::canary::after_swap(job, &old, &plan, Some(SwapSavepoint::Taken(sink.clone())));
            update(dir, job, |i| {
                i.job = plan.text().to_string();
                let entry = HistoryEntry::new(HistoryEvent::Upgraded, &plan, Some(savepoint.clone()), None);
                i.history.push(HistoryEntry { request: Some(request.clone()), ..entry });
                i.rollback_point = Some(RollbackPoint { job: old.text().to_string(), savepoint: savepoint.clone() });
                if let Some(start) = canary_start {
                    i.canary_start = start;
                }
            });
            let watch = SwapWatch { request: request.clone(), at: Instant::now(), uids };
            let swap = Swap { previous: old, savepoint: SwapSavepoint::Taken(sink), watch: Some(watch) };
            *lock(&job.swap) = Some(swap);
            let run = job.handles.metrics.runs() + 1;
            (plan, Ok(graph), UpgradeProgress::Restarted { savepoint, run, last_batches })
        }
        Err(e) => {
            let graph = old.build_after_upgrade(attempt, Some(restore), handover, false).map_err(|e| e.to_string());
            (old, graph, UpgradeProgress::Failed { cause: format!("the upgraded job cannot start: {e}") })
        }
    };
    *lock(&job.plan) = Some(plan.clone());
    lock(&job.upgrades).insert(request, status);
    (plan, graph)
}

/// The run after a failure right after the job's last swap, if it is within the swap's rollback
/// window: the job as it ran before, from the swap's savepoint, and that savepoint. The first
/// failure after a swap ends its watch, whether it rolls back or not.
pub(super) fn rollback_after(
    dir: Option<&Path>,
    job: &Job,
    plan: &JobPlan,
    cause: &str,
    attempt: u32,
) -> Option<(NextRun, Arc<Restore>)> {
    let (previous, savepoint, watch) = {
        let mut swap = lock(&job.swap);
        let swap = swap.as_mut()?;
        let watch = swap.watch.take()?;
        let events =
            job.handles.metrics.snapshot().iter().filter(|v| watch.uids.contains(&v.uid)).map(|v| v.events_in).max();
        if !plan.rollback_window().covers(watch.at.elapsed(), events.unwrap_or(0)) {
            return None;
        }
        (swap.previous.clone(), swap.savepoint.restore(), watch)
    };
    match savepoint {
        Ok(restore) => {
            let restore = Arc::new(restore);
            let (plan, graph) = rolled_back(dir, job, watch.request, previous, restore.clone(), cause, attempt);
            Some(((plan, graph), restore))
        }
        Err(e) => {
            tracing::warn!("job '{}': cannot roll back, the upgrade's savepoint failed: {e}", plan.name());
            None
        }
    }
}

/// The run after `swap` is rolled back (its new modules failed right after it, or a rollback was
/// asked for; `cause` says which): the job as it ran before, from the savepoint taken before the
/// swap (its output after that savepoint is written again; the file sink drops what was
/// committed since).
pub(super) fn rolled_back(
    dir: Option<&Path>,
    job: &Job,
    request: String,
    previous: Arc<JobPlan>,
    restore: Arc<Restore>,
    cause: &str,
    attempt: u32,
) -> NextRun {
    let savepoint = restore.location();
    tracing::warn!("job '{}': rolling back its last upgrade ({cause}), from {savepoint}", previous.name());
    lock(&job.swap).take();
    let progress = UpgradeProgress::RolledBack { savepoint: savepoint.clone(), cause: cause.to_string() };
    lock(&job.upgrades).insert(request, progress);
    *lock(&job.plan) = Some(previous.clone());
    let graph = previous.build(attempt, Some(restore)).map_err(|e| format!("the rollback failed: {e}"));
    // Checkpoints taken with the failed modules are not restarts' to resume from.
    let first = graph.as_ref().ok().and_then(|g| g.checkpointing.as_ref()).map_or(0, |c| c.first_id);
    let entry = HistoryEntry::new(HistoryEvent::RolledBack, &previous, Some(savepoint), Some(cause.to_string()));
    // Back to before a canary started, its start is forgotten; back within one, it is kept.
    let canary_start = super::canary::after_swap(job, &previous, &previous, None);
    update(dir, job, |i| {
        i.job = previous.text().to_string();
        i.first_checkpoint = first;
        i.history.push(entry);
        i.rollback_point = None;
        if let Some(start) = canary_start {
            i.canary_start = start;
        }
    });
    (previous, graph)
}

impl Jobs {
    /// Replaces the modules of running job `id`'s operators, `(uid, module reference)` each, with
    /// modules resolved by `modules`: the new modules are loaded and checked against the state of
    /// the ones they replace while the job runs; then the job stops at a savepoint (kept for a
    /// rollback) and goes on with the new modules, each operator's state handed over in place.
    /// Returns the request id to ask [`Jobs::upgrade_status`] with.
    pub fn upgrade(
        &self,
        id: &str,
        replacements: &[(String, String)],
        modules: &mut dyn Modules,
    ) -> Result<String, UpgradeError> {
        let (job, plan) = self.running(id, "be upgraded")?;
        let upgraded = Arc::new(plan.upgraded(replacements, modules).map_err(UpgradeError::Refused)?);
        let uids = replacements.iter().map(|(uid, _)| uid.clone()).collect();
        self.stop_for(&job, id, &plan, upgraded, uids, None)
    }

    /// Goes back from running job `id`'s last upgrade: the job stops at a savepoint and goes on
    /// with the modules it ran before, from the savepoint taken before that upgrade (its output
    /// since is written again; exactly-once holds). Returns the request id to ask
    /// [`Jobs::upgrade_status`] with.
    pub fn rollback(&self, id: &str) -> Result<String, UpgradeError> {
        let (job, plan) = self.running(id, "be rolled back")?;
        let Some(Swap { previous, savepoint, .. }) = lock(&job.swap).take() else {
            return Err(UpgradeError::Conflict(format!("job {id} has no upgrade to roll back")));
        };
        let restore = savepoint.restore().map_err(|e| {
            UpgradeError::Conflict(format!(
                "the last upgrade's savepoint was not stored ({e}): nothing to roll back to"
            ))
        })?;
        self.stop_for(&job, id, &plan, previous, Vec::new(), Some(Arc::new(restore)))
    }

    /// Stops `job`, now running `plan`, at a savepoint, to go on as `next` (an upgrade, or a
    /// rollback from `rollback`'s savepoint).
    pub(super) fn stop_for(
        &self,
        job: &Arc<Job>,
        id: &str,
        plan: &JobPlan,
        next: Arc<JobPlan>,
        uids: Vec<String>,
        rollback: Option<Arc<Restore>>,
    ) -> Result<String, UpgradeError> {
        let sink = plan.savepoint_sink(None, SavepointFormat::Canonical).map_err(SavepointError::Target)?;
        // An upgrade goes on from it: a resume never goes back behind it (a rollback goes on
        // from the earlier savepoint it returns to, a resume point already).
        let resumed = plan.checkpoint_storage().filter(|_| rollback.is_none());
        let reason = if rollback.is_some() { SavepointReason::Rollback } else { SavepointReason::Upgrade };
        let sink = Arc::new(sink.resumed_from(resumed));
        let request_id = self.request_id(id);
        // In place when every operator of the next run declares the states of the one it
        // replaces: then nothing needs reading back, and the job goes on before the savepoint is
        // stored. While either run splits an operator's key groups between modules (a canary),
        // each subtask splits its state where the next run's parts begin and hands each part over
        // apart, when the state is in memory and the canaries' modules declare the same states.
        let split = job.handles.metrics.splits_key_groups() || next.has_canary();
        let handover =
            rollback.is_none() && plan.declares_same_states(&next) && (!split || next.hands_canaries_over(plan));
        {
            let mut pending = lock(&job.upgrade);
            if pending.is_some() {
                return Err(UpgradeError::Conflict(format!("job {id} is already being upgraded")));
            }
            job.handles.handover.prepare(next.canary_cuts());
            // A shadow compares with the module it stood beside: that of an operator being
            // upgraded, or of any after a rollback, is gone.
            match rollback {
                Some(_) => job.handles.shadows.stop_all("the job was rolled back"),
                None => uids.iter().for_each(|uid| job.handles.shadows.stop(uid, "the operator was upgraded")),
            }
            let request = request_id.clone();
            *pending = Some(PendingUpgrade { request, plan: next, sink: sink.clone(), uids, rollback });
        }
        lock(&job.upgrades).insert(request_id.clone(), UpgradeProgress::InProgress);
        self.update(job, |i| {
            if i.state == JobState::Running {
                i.state = JobState::Upgrading;
            }
        });
        let (runner, key, stored, dir) = (job.clone(), request_id.clone(), sink.clone(), self.dir.clone());
        let done = Box::new(move |result: Result<u64, String>| {
            let Err(cause) = result else {
                super::savepoints::record_savepoint(dir.as_deref(), &runner, &stored, reason);
                return;
            };
            stored.failed(cause.clone());
            if lock(&runner.upgrade).take().is_some() {
                let cause = format!("the savepoint before the swap failed: {cause}");
                lock(&runner.upgrades).insert(key, UpgradeProgress::Failed { cause });
                // The job goes on with its modules.
                update(dir.as_deref(), &runner, |i| {
                    if i.state == JobState::Upgrading {
                        i.state = JobState::Running;
                    }
                });
            } else {
                // The new modules already run: only the rollback point is lost.
                tracing::warn!(
                    "the savepoint of upgrade {key} failed after the swap ({cause}); it cannot be rolled back"
                );
            }
        });
        let request = SavepointRequest { sink, stop: true, handover, drain: false, done };
        if job.request_savepoint(request).is_err() {
            // The job ended meanwhile: its run loop has recorded how.
            lock(&job.upgrade).take();
            let cause = "the job ended".to_string();
            lock(&job.upgrades).insert(request_id.clone(), UpgradeProgress::Failed { cause });
        }
        Ok(request_id)
    }

    /// Where upgrade `request` of job `id` stands, if both exist.
    pub fn upgrade_status(&self, id: &str, request: &str) -> Option<UpgradeStatus> {
        let job = lock(&self.jobs).get(id).cloned()?;
        status_of(&job, request)
    }

    /// Records in job `job`'s history the pauses of its upgrades that have become known.
    pub(super) fn record_pauses(&self, job: &Job) {
        let info = lock(&job.info);
        let unknown = info.history.iter().filter(|e| e.pause_ms.is_none()).filter_map(|e| e.request.clone());
        let unknown: Vec<String> = unknown.collect();
        drop(info);
        for request in unknown {
            if let Some(UpgradeStatus::Completed { pause_ms, .. }) = status_of(job, &request) {
                self.update(job, |i| {
                    let entry = i.history.iter_mut().find(|e| e.request.as_ref() == Some(&request));
                    entry.into_iter().for_each(|e| e.pause_ms = Some(pause_ms));
                });
            }
        }
    }
}

/// Where upgrade `request` of `job` stands, if it asked for one.
fn status_of(job: &Job, request: &str) -> Option<UpgradeStatus> {
    let upgrades = lock(&job.upgrades);
    Some(match upgrades.get(request)? {
        UpgradeProgress::InProgress => UpgradeStatus::InProgress,
        UpgradeProgress::Failed { cause } => UpgradeStatus::Failed { cause: cause.clone() },
        UpgradeProgress::RolledBack { savepoint, cause } => {
            UpgradeStatus::RolledBack { savepoint: savepoint.clone(), cause: cause.clone() }
        }
        UpgradeProgress::Restarted { run, .. } if job.handles.metrics.runs() < *run => UpgradeStatus::InProgress,
        UpgradeProgress::Restarted { savepoint, last_batches, .. } => {
            let mut pause_ms: f64 = 0.0;
            for (uid, last) in last_batches {
                match job.handles.metrics.batches_processed(uid).0 {
                    0 => return Some(UpgradeStatus::InProgress),
                    first => pause_ms = pause_ms.max(first.saturating_sub(*last) as f64 / 1e6),
                }
            }
            UpgradeStatus::Completed { savepoint: savepoint.clone(), pause_ms }
        }
    })
}
