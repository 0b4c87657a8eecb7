//! Canaries asked of a running job (`docs/upgrades.md`, *Canaries*): start one or change its
//! share, promote it, abort it. Each step is an upgrade: the job stops at a savepoint and goes on
//! with the new assignment of key groups to modules, each part's state read from the savepoint.
//! The savepoint taken when the canary started is kept for an abort that must roll back.
use std::sync::Arc;

use super::upgrade::SwapSavepoint;
use super::{Job, Jobs, UpgradeError};
use crate::control::lock;
use crate::job::{JobPlan, Modules};

/// A step of a canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryStep {
    /// Start a canary of this share of the key groups ("10%") on the operators named with their
    /// canary's module, or give the running canaries this share.
    Share(String),
    /// The canary's module takes over every key group of its operator.
    Promote,
    /// The canary's key groups go back to the operator's module, as the request says.
    Abort(CanaryAbort),
}

/// How an abort gives a canary's key groups back to the operator's own module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CanaryAbort {
    /// With the state the canary left them (refused when the canary changed a state's layout,
    /// which the operator's module cannot read).
    HandBack,
    /// The whole job goes back to the savepoint taken when the canary started, with the modules
    /// it ran then (its output since is written again, exactly once).
    Rollback,
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
            CanaryStep::Share(share) => plan.canaried(replacements, share, modules),
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
