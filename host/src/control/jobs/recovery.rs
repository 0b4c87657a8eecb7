//! Where a job resumes from when a server restarts: its newest own checkpoint, else the savepoint
//! it started from, else the start.
use std::path::Path;
use std::sync::Arc;

use super::Jobs;
use super::record::*;
use super::upgrade::{Swap, SwapSavepoint};
use crate::checkpoint::Restore;
use crate::control::lock;
use crate::job::{JobPlan, Modules};
use crate::runtime::now_ms;

impl Jobs {
    /// Resumes the jobs that were running when the previous server stopped, each from its latest
    /// checkpoint (or from the start, when it had none yet). A job without checkpointing cannot
    /// be resumed without repeating its output, so it is marked failed, saying so.
    pub fn resume_interrupted(&self, modules: &mut dyn Modules, base: &Path) {
        let ids = std::mem::take(&mut *lock(&self.interrupted));
        for id in ids {
            let Some(job) = lock(&self.jobs).get(&id).cloned() else { continue };
            let text = lock(&job.info).job.clone();
            let placement = self.placement.clone();
            let resumed = JobPlan::new(text, "resumed job", base, modules, placement)
                .map_err(|e| e.to_string())
                .and_then(|plan| {
                    let plan = plan.with_id(&id);
                    if plan.checkpoint_storage().is_none() {
                        return Err("it has no [checkpointing], so it cannot be resumed without repeating its output"
                            .to_string());
                    }
                    // Read first: a guard in a `match` scrutinee lives through the whole match.
                    let (first_checkpoint, lineage, attempt) = {
                        let info = lock(&job.info);
                        (info.first_checkpoint, info.lineage.clone(), info.attempt + 1)
                    };
                    let restore = resume_point(&plan, first_checkpoint, || match lineage {
                        Some(lineage) => {
                            let restore = Restore::savepoint(&lineage.savepoint, base)?.forked(lineage.fork);
                            Ok(Some(Arc::new(restore)))
                        }
                        None => Ok(None),
                    })?;
                    let graph = plan.build(attempt, restore.clone()).map_err(|e| e.to_string())?;
                    Ok((plan, graph, restore))
                });
            match resumed {
                Ok((plan, graph, restore)) => {
                    tracing::info!("resuming job {id} ('{}') from {}", plan.name(), resumed_from(&restore));
                    // Its last upgrade can still be rolled back by hand.
                    let rollback_point = lock(&job.info).rollback_point.clone();
                    if let Some(point) = rollback_point {
                        match plan.sibling(point.job, modules) {
                            Ok(previous) => {
                                let savepoint = SwapSavepoint::Recorded(point.savepoint);
                                let swap = Swap { previous: Arc::new(previous), savepoint, watch: None };
                                *lock(&job.swap) = Some(swap);
                            }
                            Err(e) => tracing::warn!("job {id}: its last upgrade can no longer be rolled back: {e}"),
                        }
                    }
                    let canary_start = lock(&job.info).canary_start.clone();
                    if let Some(point) = canary_start {
                        match plan.sibling(point.job, modules) {
                            Ok(previous) => {
                                let savepoint = SwapSavepoint::Recorded(point.savepoint);
                                let start = super::canary::CanaryStart { previous: Arc::new(previous), savepoint };
                                *lock(&job.canary_start) = Some(start);
                            }
                            Err(e) => tracing::warn!("job {id}: its canary can no longer be rolled back: {e}"),
                        }
                    }
                    self.launch(job, plan, graph, restore);
                }
                Err(cause) => self.update(&job, |i| {
                    i.state = JobState::Failed;
                    i.ended_at = Some(now_ms());
                    i.failure = Some(format!("the server stopped while the job was running; {cause}"));
                }),
            }
        }
    }
}

/// Where a job resumes from: its newest own checkpoint since `since` (older ones belong to
/// earlier runs), else what `started_from` gives (the savepoint its run started from), else the
/// start (`None`). One policy for restarts in a running job and for a restarted server.
pub(super) fn resume_point(
    plan: &JobPlan,
    since: u64,
    started_from: impl FnOnce() -> Result<Option<Arc<Restore>>, String>,
) -> Result<Option<Arc<Restore>>, String> {
    match plan.latest_checkpoint(since)? {
        Some(checkpoint) => Ok(Some(Arc::new(checkpoint))),
        None => started_from(),
    }
}

/// Where a run resumed from, for people.
pub(super) fn resumed_from(restore: &Option<Arc<Restore>>) -> String {
    match restore {
        None => "the start (no checkpoint completed yet)".to_string(),
        Some(r) if r.is_savepoint() => format!("savepoint {}", r.location()),
        Some(r) => format!("checkpoint {}", r.id()),
    }
}
