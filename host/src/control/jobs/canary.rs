//! Canaries asked of a running job (`docs/upgrades.md`, *Canaries*): start one or change its
//! share, promote it, abort it. Each step is an upgrade: the job stops at a savepoint and goes on
//! with the new assignment of key groups to modules, each part's state read from the savepoint.
//! The savepoint taken when the canary started is kept for an abort that must roll back.
use std::sync::Arc;

use std::path::Path;

use super::record::{HistoryEntry, HistoryEvent};
use super::store::update;
use super::upgrade::{NextRun, SwapSavepoint};
use super::{Job, Jobs, UpgradeError};
use crate::checkpoint::Restore;
use crate::control::lock;
pub use crate::job::spec::CanaryAbort;
use crate::job::{CanarySettings, JobPlan, Modules};

/// A step of a canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryStep {
    /// Start a canary (its share of the key groups, and how it aborts by itself) on the
    /// operators named with their canary's module, or give the running canaries this share.
    Share(CanarySettings),
    /// The canary's module takes over every key group of its operator.
    Promote,
    /// The canary's key groups go back to the operator's module, as the request says.
    Abort(CanaryAbort),
}

/// Where a job's canary started: the job as it ran before it, and the savepoint taken then.
pub(super) struct CanaryStart {
    pub(super) previous: Arc<JobPlan>,
    pub(super) savepoint: SwapSavepoint,
}

impl Jobs {
    /// Carries out canary `step` on running job `id` (for a start, on the `(uid, module
    /// reference)` operators named, modules resolved by `modules`). Returns the request id to ask
    /// [`Jobs::upgrade_status`] with.
    pub fn canary(
        &self,
        id: &str,
        step: &CanaryStep,
        replacements: &[(String, String)],
        modules: &mut dyn Modules,
    ) -> Result<String, UpgradeError> {
        let (job, plan) = self.running(id, "run a canary")?;
        let (next, uids) = match step {
            CanaryStep::Share(settings) => plan.canaried(replacements, settings, modules),
            CanaryStep::Promote => plan.promoted(modules),
            CanaryStep::Abort(CanaryAbort::HandBack) => plan.canary_handed_back(modules),
            CanaryStep::Abort(CanaryAbort::Rollback) => return self.canary_rolled_back(&job, id, &plan),
        }
        .map_err(UpgradeError::Refused)?;
        self.stop_for(&job, id, &plan, Arc::new(next), uids, None)
    }

    /// Aborts `job`'s canary by going back to the savepoint taken when it started.
    fn canary_rolled_back(&self, job: &Arc<Job>, id: &str, plan: &JobPlan) -> Result<String, UpgradeError> {
        let (previous, restore) = {
            let start = lock(&job.canary_start);
            let start = start.as_ref().ok_or_else(|| {
                UpgradeError::Conflict(match plan.has_canary() {
                    true => format!(
                        "job {id} does not know where its canary started (its run began after that, from a \
                         checkpoint or a savepoint that holds the canary): abort it with `hand-back`, or promote it"
                    ),
                    false => format!("job {id} runs no canary to abort"),
                })
            })?;
            let restore = start.savepoint.restore().map_err(|e| {
                UpgradeError::Conflict(format!(
                    "the savepoint taken when the canary started was not stored ({e}): nothing to roll back to"
                ))
            })?;
            (start.previous.clone(), restore)
        };
        self.stop_for(job, id, plan, previous, Vec::new(), Some(Arc::new(restore)))
    }
}

/// After a swap from `old` to `new` (an upgrade or a canary step, whose savepoint is
/// `savepoint`; a rollback, which takes none): a canary that starts keeps where it started, one
/// that ends forgets it. Returns what the job's record keeps of it, when that changed.
pub(super) fn after_swap(
    job: &Job,
    old: &Arc<JobPlan>,
    new: &JobPlan,
    savepoint: Option<SwapSavepoint>,
) -> Option<Option<super::RollbackPoint>> {
    let mut start = lock(&job.canary_start);
    match (start.is_some(), new.has_canary(), savepoint) {
        (false, true, Some(savepoint)) => {
            let point = super::RollbackPoint { job: old.text().to_string(), savepoint: savepoint.location() };
            *start = Some(CanaryStart { previous: old.clone(), savepoint });
            Some(Some(point))
        }
        (true, false, _) => {
            *start = None;
            Some(None)
        }
        _ => None,
    }
}

/// After a failure of a run of `plan`: when one of its canaries' abort conditions holds, the run
/// that aborts it as its job file says, instead of a restart with it (the record says why): with
/// its key groups handed back, from where a restart would go on (the latest checkpoint, else
/// `savepoint`, the run's start), or rolled back to the canary's start. `None` when none holds,
/// or the rollback it asks for cannot be made (the failure is then handled as any).
pub(super) fn aborted_by_condition(
    dir: Option<&Path>,
    job: &Job,
    plan: &Arc<JobPlan>,
    attempt: u32,
    savepoint: Option<Arc<Restore>>,
) -> Option<(NextRun, Option<Arc<Restore>>)> {
    let (why, by) = plan.canary_abort_due()?;
    let cause = format!("the canary was aborted: {why}");
    tracing::warn!("job '{}': {cause}", plan.name());
    if by == CanaryAbort::Rollback {
        let start = lock(&job.canary_start).as_ref().map(|s| (s.previous.clone(), s.savepoint.restore()));
        let (previous, restore) = match start {
            Some((previous, Ok(restore))) => (previous, Arc::new(restore)),
            Some((_, Err(e))) => {
                tracing::warn!("job '{}': cannot roll its canary back: {e}", plan.name());
                return None;
            }
            None => {
                tracing::warn!("job '{}': cannot roll its canary back: where it started is not known", plan.name());
                return None;
            }
        };
        let request = format!("canary-abort-{attempt}");
        let next = super::upgrade::rolled_back(dir, job, request, previous, restore.clone(), &cause, attempt);
        return Some((next, Some(restore)));
    }
    let next = match plan.canary_handed_back(&mut crate::job::NoOtherModules) {
        Ok((next, _)) => Arc::new(next),
        Err(e) => {
            tracing::warn!("job '{}': cannot hand its canary's key groups back: {e}", plan.name());
            return None;
        }
    };
    lock(&job.swap).take();
    lock(&job.canary_start).take();
    *lock(&job.plan) = Some(next.clone());
    let entry = HistoryEntry::new(HistoryEvent::CanaryAborted, &next, None, Some(cause));
    update(dir, job, |i| {
        i.job = next.text().to_string();
        i.history.push(entry);
        i.rollback_point = None;
        i.canary_start = None;
    });
    let since = lock(&job.info).first_checkpoint;
    let graph = super::lifecycle::restart(job, &next, attempt, since, savepoint.clone());
    Some(((next, graph), savepoint))
}
