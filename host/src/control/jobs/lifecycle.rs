//! A job's run loop: attempt after attempt as its restart strategy allows, an upgrade's or a
//! rollback's run in between, until it finishes, is canceled or fails.
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Job;
use super::record::*;
use super::recovery::{resume_point, resumed_from};
use super::store::update;
use super::upgrade::{Swap, rolled_back, upgraded};
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

/// Runs a job's attempts until one finishes, it is canceled, or the restart strategy gives up.
/// Each restart resumes from the latest completed checkpoint, with the next attempt number.
pub(super) fn run_attempts(
    dir: Option<&Path>,
    job: &Job,
    mut plan: Arc<JobPlan>,
    first: JobGraph,
    mut savepoint: Option<Arc<Restore>>,
) {
    let mut restarts = Restarts::new(plan.restart_strategy().clone());
    let mut attempt = first.attempt;
    // An attempt's graph, or why it could not be built (the storage may be down): that fails the
    // attempt like a failing subtask, and the restart strategy decides what comes next.
    let mut next: Result<JobGraph, String> = Ok(first);
    let mut swap: Option<Swap> = None;
    let (state, failure) = loop {
        let started = Instant::now();
        let failure = match next {
            Ok(graph) => {
                match runtime::execute(graph, &job.handles) {
                    Ok(()) => match take(&job.upgrade) {
                        // Stopped for an upgrade: the next run has the new code and the state.
                        Some(upgrade) => {
                            (plan, next, swap) = upgraded(dir, job, plan, upgrade, attempt);
                            continue;
                        }
                        None => break (JobState::Finished, None),
                    },
                    Err(JobFailure::Cancelled) => {
                        plan.canceled();
                        break (JobState::Canceled, None);
                    }
                    Err(failure) => failure.to_string(),
                }
            }
            Err(cause) => cause,
        };
        update(dir, job, |i| {
            i.failures.push(FailureRecord { timestamp: now_ms(), attempt, cause: failure.clone() });
            let excess = i.failures.len().saturating_sub(FAILURE_HISTORY);
            i.failures.drain(..excess);
        });
        if let Some(swap) = swap.take().filter(|s| {
            let events =
                job.handles.metrics.snapshot().iter().filter(|v| s.uids.contains(&v.uid)).map(|v| v.events_in).max();
            plan.rollback_window().covers(s.at.elapsed(), events.unwrap_or(0))
        }) {
            match swap.sink.stored() {
                Ok(restore) => {
                    let Swap { request, previous, .. } = swap;
                    let restore = Arc::new(restore);
                    savepoint = Some(restore.clone());
                    (plan, next) = rolled_back(dir, job, request, previous, restore, &failure, attempt);
                    continue;
                }
                Err(e) => {
                    tracing::warn!("job '{}': cannot roll back, the upgrade's savepoint failed: {e}", plan.name())
                }
            }
        }
        let Some(delay) = restarts.next_delay(started, Instant::now()) else {
            let cause = match plan.restart_strategy() {
                RestartStrategy::None => failure,
                strategy => format!("{failure} (not restarted again: the {strategy} allows no more restarts)"),
            };
            break (JobState::Failed, Some(cause));
        };
        attempt += 1;
        let delay_text = humantime::format_duration(Duration::from_millis(delay.as_millis() as u64));
        tracing::warn!("job '{}' failed: {failure}; restarting in {delay_text} (attempt {attempt})", plan.name());
        update(dir, job, |i| {
            i.state = JobState::Restarting;
            i.attempt = attempt;
        });
        if !sleep_unless_canceled(job, delay) {
            plan.canceled();
            break (JobState::Canceled, None);
        }
        next = restart(job, &plan, attempt, lock(&job.info).first_checkpoint, savepoint.clone());
        if next.is_ok() {
            update(dir, job, |i| i.state = JobState::Running);
        }
    };
    job.release();
    drop((plan, swap));
    while let Ok(request) = job.handles.savepoints.try_recv() {
        (request.done)(Err("the job ended before the savepoint was taken".to_string()));
    }
    update(dir, job, |info| {
        info.vertices = job.handles.metrics.snapshot();
        info.first_event_at = job.handles.metrics.first_sink_event_at();
        info.ended_at = Some(now_ms());
        info.state = state;
        info.failure = failure;
        info.rollback_point = None;
    });
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
