//! Trials of an upgrade while the job runs on (`weir upgrade --trial`, and before every upgrade
//! unless `--no-trial`): each new module migrates, in a scratch sandbox, the state of a sample of
//! its operator's key groups, taken from the job's latest completed checkpoint or, when it has
//! none (or only RocksDB's native ones), a savepoint taken for the trial and disposed of after
//! (see [`crate::wasm::trial`]).
use std::sync::Arc;

use serde::Serialize;

use super::{Jobs, SavepointError, UpgradeError};
use crate::checkpoint::Restore;
use crate::checkpoint::savepoint::{SavepointFormat, SavepointLocation};
use crate::job::{JobPlan, Modules};
use crate::runtime::{EventBatch, SavepointRequest};
use crate::wasm::trial::{self, OperatorTrial};

/// Key groups a trial takes per operator subtask, unless asked otherwise.
pub const TRIAL_SAMPLE: u32 = 2;
/// Most bytes of an operator's input a trial records to replay.
const RECORDED_BYTES: usize = 256 << 10;
/// Tries from the latest checkpoint before a trial takes a savepoint of its own.
const CHECKPOINT_ATTEMPTS: u32 = 3;
/// Longest a trial waits for input to replay before it reads the state.
const RECORDING_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What the trial of an upgrade found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TrialReport {
    /// Whether every entry of the sample migrated.
    pub passed: bool,
    /// The checkpoint or savepoint the sample's state came from.
    pub state_from: String,
    /// What each new module did.
    pub operators: Vec<OperatorTrial>,
}

impl std::fmt::Display for TrialReport {
    /// Why it failed, naming each failing entry.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for op in &self.operators {
            if !op.failures.is_empty() {
                write!(f, "operator '{}': {} cannot migrate its state: ", op.uid, op.module)?;
                let failures: Vec<String> = op
                    .failures
                    .iter()
                    .map(|x| format!("state '{}' of key '{}' ({}): {}", x.state, x.key, x.entry, x.error))
                    .collect();
                write!(f, "{}; ", failures.join("; "))?;
            }
            for r in op.replayed.iter().filter(|r| r.error.is_some()) {
                let error = r.error.as_deref().unwrap_or_default();
                write!(
                    f,
                    "operator '{}': {} fails on event {} of key '{}': {error}; ",
                    op.uid, op.module, r.event, r.key
                )?;
            }
        }
        write!(f, "the trial took the state of {}, and the job runs on untouched", self.state_from)
    }
}

impl Jobs {
    /// Tries running job `id`'s operators' new modules, `(uid, module reference)` each resolved
    /// by `modules`, on the state of `per_subtask` key groups of each operator subtask, while the
    /// job runs on. A module that cannot take over the state at all is refused as an upgrade is.
    pub fn trial(
        &self,
        id: &str,
        replacements: &[(String, String)],
        modules: &mut dyn Modules,
        per_subtask: u32,
    ) -> Result<TrialReport, UpgradeError> {
        let (job, plan) = self.running(id, "be upgraded")?;
        let upgraded = plan.upgraded(replacements, modules).map_err(UpgradeError::Refused)?;
        let (state_from, tried) = self.try_on_state(&job, &plan, &upgraded, replacements, per_subtask)?;
        let operators = tried.map_err(UpgradeError::Refused)?;
        let passed = operators.iter().all(|op| op.failures.is_empty() && op.replayed.iter().all(|r| r.error.is_none()));
        Ok(TrialReport { passed, state_from, operators })
    }

    /// The trials of `replacements` in `upgraded` (the job runs `plan` now) on the state of the
    /// latest checkpoint, or of a savepoint taken for them: where the state came from, and what
    /// each found. The latest checkpoint may be deleted while it is read (a newer one
    /// completed): then the trial starts again from the newest; a RocksDB job's checkpoints are
    /// native, and a job without one gets a canonical savepoint of its own.
    fn try_on_state(
        &self,
        job: &super::Job,
        plan: &JobPlan,
        upgraded: &JobPlan,
        replacements: &[(String, String)],
        per_subtask: u32,
    ) -> Result<(String, Result<Vec<OperatorTrial>, String>), UpgradeError> {
        // Some input first, recorded from now on to replay through both modules (the state is
        // read after, so that no newer checkpoint deletes it meanwhile).
        let recent = &job.handles.recent;
        for (uid, _) in replacements {
            recent.arm(uid, RECORDED_BYTES);
        }
        let started = std::time::Instant::now();
        while replacements.iter().any(|(uid, _)| recent.recorded(uid) == 0) && started.elapsed() < RECORDING_WAIT {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let recorded: Vec<Vec<(usize, EventBatch)>> = replacements.iter().map(|(uid, _)| recent.take(uid)).collect();
        let mut tried = Err(String::new());
        let mut state_from = String::new();
        for attempt in 0..CHECKPOINT_ATTEMPTS {
            let checkpoint = match plan.checkpoints_native() || attempt + 1 == CHECKPOINT_ATTEMPTS {
                true => None,
                false => match plan.latest_checkpoint(0) {
                    Ok(checkpoint) => checkpoint,
                    // The newest was being replaced by a newer one (its files deleted as it was
                    // read): the next attempt takes that one.
                    Err(e) => {
                        tried = Err(e);
                        continue;
                    }
                },
            };
            let (restore, scratch) = match checkpoint {
                Some(restore) => (restore, false),
                None => (self.trial_savepoint(job, plan)?, true),
            };
            state_from = restore.location();
            let restore = Arc::new(restore);
            tried = replacements
                .iter()
                .zip(&recorded)
                .map(|((uid, _), recorded)| try_operator(plan, upgraded, uid, &restore, per_subtask, recorded))
                .collect();
            if scratch {
                let disposed =
                    SavepointLocation::parse(&state_from, std::path::Path::new("/")).and_then(|at| at.dispose());
                if let Err(e) = disposed {
                    tracing::warn!("cannot dispose of the trial's savepoint {state_from}: {e}");
                }
            }
            if tried.is_ok() || scratch {
                break;
            }
        }
        Ok((state_from, tried))
    }

    /// A savepoint of `job` for a trial to take state from, the job running on.
    fn trial_savepoint(&self, job: &super::Job, plan: &JobPlan) -> Result<Restore, UpgradeError> {
        let sink = Arc::new(plan.savepoint_sink(None, SavepointFormat::Canonical).map_err(SavepointError::Target)?);
        let stored = sink.clone();
        let done = Box::new(move |result: Result<u64, String>| {
            if let Err(cause) = result {
                stored.failed(cause);
            }
        });
        let request = SavepointRequest { sink: sink.clone(), stop: false, handover: false, drain: false, done };
        if job.request_savepoint(request).is_err() {
            return Err(UpgradeError::Conflict("the job ended before its trial's savepoint".to_string()));
        }
        sink.stored().map_err(|e| UpgradeError::Conflict(format!("the trial's savepoint failed: {e}")))
    }
}

/// The trial of operator `uid`'s module in `upgraded` (running in `plan` now) on the state
/// `restore` holds: its sample migrated, then the input `recorded` replayed (on the state of the
/// key groups it falls in, sampled or not).
fn try_operator(
    plan: &JobPlan,
    upgraded: &JobPlan,
    uid: &str,
    restore: &Arc<Restore>,
    per_subtask: u32,
    recorded: &[(usize, EventBatch)],
) -> Result<OperatorTrial, String> {
    let (old, new) = (plan.trial_target(uid)?, upgraded.trial_target(uid)?);
    let key_groups = trial::sample_key_groups(&new, per_subtask);
    let in_place = plan.declares_same_states(upgraded);
    let mut tried = trial::trial(&new, restore, &key_groups, in_place).map_err(|e| format!("operator '{uid}': {e}"))?;
    if !tried.failures.is_empty() {
        // Its state cannot be migrated: nothing to replay the input on.
        return Ok(tried);
    }
    tried.replayed = trial::replay(&old, &new, restore, recorded)
        .map_err(|e| format!("operator '{uid}': replaying its input: {e}"))?;
    Ok(tried)
}
