//! A job's run loop as explicit phases (running, swapping, failed, restarting, done): attempt
//! after attempt as its restart strategy allows, an upgrade's or a rollback's run in between,
//! until it finishes, is canceled or fails.
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Job;
use super::canary::aborted_by_condition;
use super::record::*;
use super::recovery::{resume_point, resumed_from};
use super::store::update;
use super::upgrade::{PendingUpgrade, rollback_after, upgraded};
use crate::checkpoint::Restore;
use crate::control::lock;
use crate::job::JobPlan;
use crate::job::restart::{RestartStrategy, Restarts};
use crate::runtime::now_ms;
use crate::runtime::{self, JobFailure, JobGraph};

/// Takes what `slot` holds, its lock released at once (a guard in a `match` scrutinee would be
/// held through the whole match).
pub(super) fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    lock(slot).take()
}

/// Where a job's run loop is. Each phase's step does its work and returns the next phase: the
/// legal transitions are those the steps return (Arroyo's controller writes them as types; with
/// steps of a dozen lines each, one enum says the same).
enum Phase {
    /// A graph runs (an attempt, or the run after a swap or a rollback), or could not be built
    /// (the storage may be down): that fails the attempt like a failing subtask.
    Running(Result<JobGraph, String>),
    /// The run stopped at an upgrade's or a rollback's savepoint: the next has the other modules.
    Swapping(PendingUpgrade),
    /// The run failed: the last swap is rolled back if the failure is within its window, else
    /// the restart strategy decides.
    Failed(String),
    /// Waiting out the restart delay before the next attempt.
    Restarting(Duration),
    /// Over.
    Done(JobState, Option<String>),
}

/// What a job's run loop carries from phase to phase.
struct RunLoop<'a> {
    dir: Option<&'a Path>,
    job: &'a Job,
    /// What the job runs now.
    plan: Arc<JobPlan>,
    attempt: u32,
    restarts: Restarts,
    /// When the current run started, for the restart strategy.
    started: Instant,
    /// The savepoint restarts resume from when the job has no checkpoint of its own yet.
    savepoint: Option<Arc<Restore>>,
}

/// Runs a job until it finishes, is canceled, or fails for good: attempt after attempt as its
/// restart strategy allows (each resuming from the latest completed checkpoint), with the runs of
/// upgrades and rollbacks in between.
pub(super) fn run_attempts(
    dir: Option<&Path>,
    job: &Job,
    plan: Arc<JobPlan>,
    first: JobGraph,
    savepoint: Option<Arc<Restore>>,
) {
    let restarts = Restarts::new(plan.restart_strategy().clone());
    let attempt = first.attempt;
    let mut run = RunLoop { dir, job, plan, attempt, restarts, started: Instant::now(), savepoint };
    let mut phase = Phase::Running(Ok(first));
    let (state, failure) = loop {
        phase = match phase {
            Phase::Running(graph) => run.running(graph),
            Phase::Swapping(upgrade) => run.swapping(upgrade),
            Phase::Failed(cause) => run.failed(cause),
            Phase::Restarting(delay) => run.restarting(delay),
            Phase::Done(state, failure) => break (state, failure),
        };
    };
    job.release();
    drop(run);
    // The end first: from then on no request is taken (see `Job::request_savepoint`), so the
    // ones still in the channel are all there is to answer.
    update(dir, job, |info| {
        info.vertices = job.handles.metrics.snapshot();
        info.first_event_at = job.handles.metrics.first_sink_event_at();
        info.ended_at = Some(now_ms());
        info.state = state;
        info.failure = failure;
        info.rollback_point = None;
        info.canary_start = None;
    });
    while let Ok(request) = job.handles.savepoints.try_recv() {
        (request.done)(Err("the job ended before the savepoint was taken".to_string()));
    }
}

impl RunLoop<'_> {
    fn running(&mut self, graph: Result<JobGraph, String>) -> Phase {
        self.started = Instant::now();
        let graph = match graph {
            Ok(graph) => graph,
            Err(cause) => return Phase::Failed(cause),
        };
        match runtime::execute(graph, &self.job.handles) {
            Ok(()) => match take(&self.job.upgrade) {
                Some(upgrade) => Phase::Swapping(upgrade),
                None => Phase::Done(JobState::Finished, None),
            },
            Err(JobFailure::Cancelled) => {
                self.plan.canceled();
                Phase::Done(JobState::Canceled, None)
            }
            Err(failure) => Phase::Failed(failure.to_string()),
        }
    }

    /// The next run has the new code (or the old, for a rollback) and the state.
    fn swapping(&mut self, upgrade: PendingUpgrade) -> Phase {
        let graph;
        (self.plan, graph) = upgraded(self.dir, self.job, self.plan.clone(), upgrade, self.attempt);
        update(self.dir, self.job, |i| i.state = JobState::Running);
        Phase::Running(graph)
    }

    fn failed(&mut self, cause: String) -> Phase {
        let attempt = self.attempt;
        update(self.dir, self.job, |i| {
            i.failures.push(FailureRecord { timestamp: now_ms(), attempt, cause: cause.clone() });
            i.guest_traps += u64::from(cause.contains(crate::wasm::GUEST_TRAPPED));
            let excess = i.failures.len().saturating_sub(FAILURE_HISTORY);
            i.failures.drain(..excess);
        });
        // A canary whose abort condition holds is aborted as its job file says, not restarted.
        let savepoint = self.savepoint.clone();
        if let Some(((plan, graph), savepoint)) =
            aborted_by_condition(self.dir, self.job, &self.plan, attempt, savepoint)
        {
            (self.plan, self.savepoint) = (plan, savepoint);
            return Phase::Running(graph);
        }
        if let Some(((plan, graph), restore)) = rollback_after(self.dir, self.job, &self.plan, &cause, attempt) {
            (self.plan, self.savepoint) = (plan, Some(restore));
            return Phase::Running(graph);
        }
        let Some(delay) = self.restarts.next_delay(self.started, Instant::now()) else {
            let cause = match self.plan.restart_strategy() {
                RestartStrategy::None => cause,
                // After the cause's first line: the rest is a guest's output and backtrace.
                strategy => {
                    let end = cause.find('\n').unwrap_or(cause.len());
                    let (head, rest) = cause.split_at(end);
                    format!("{head} (not restarted again: the {strategy} allows no more restarts){rest}")
                }
            };
            return Phase::Done(JobState::Failed, Some(cause));
        };
        self.attempt += 1;
        let delay_text = humantime::format_duration(Duration::from_millis(delay.as_millis() as u64));
        tracing::warn!(
            "job '{}' failed: {cause}; restarting in {delay_text} (attempt {})",
            self.plan.name(),
            self.attempt
        );
        update(self.dir, self.job, |i| {
            i.state = JobState::Restarting;
            i.attempt = attempt + 1;
        });
        Phase::Restarting(delay)
    }

    fn restarting(&mut self, delay: Duration) -> Phase {
        if !sleep_unless_canceled(self.job, delay) {
            self.plan.canceled();
            return Phase::Done(JobState::Canceled, None);
        }
        let since = lock(&self.job.info).first_checkpoint;
        let next = restart(self.job, &self.plan, self.attempt, since, self.savepoint.clone());
        if next.is_ok() {
            update(self.dir, self.job, |i| i.state = JobState::Running);
        }
        Phase::Running(next)
    }
}

/// The graph of attempt `attempt`, resuming from the job's latest checkpoint since `since`, or
/// else from the `savepoint` the run started from, or else from the start.
pub(super) fn restart(
    job: &Job,
    plan: &JobPlan,
    attempt: u32,
    since: u64,
    savepoint: Option<Arc<Restore>>,
) -> Result<JobGraph, String> {
    let restore = resume_point(plan, since, || Ok(savepoint)).map_err(|e| format!("the restart failed: {e}"))?;
    if let Some(r) = &restore {
        job.handles.metrics.checkpoint_stats(|s| s.restored(r.stats()));
    }
    tracing::warn!("job '{}': attempt {attempt} resumes from {}", plan.name(), resumed_from(&restore));
    plan.build(attempt, restore).map_err(|e| format!("the restart failed: {e}"))
}

/// Waits `delay` before `job`'s next attempt; false, at once, when it is canceled meanwhile.
pub(super) fn sleep_unless_canceled(job: &Job, delay: Duration) -> bool {
    let until = Instant::now() + delay;
    let mut info = lock(&job.info);
    loop {
        if job.handles.cancel.load(Ordering::SeqCst) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        info = match job.changed.wait_timeout(info, left) {
            Ok((info, _)) => info,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}
