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
use crate::runtime::SavepointRequest;
use crate::wasm::trial::{self, OperatorTrial};

/// Key groups a trial takes per operator subtask, unless asked otherwise.
pub const TRIAL_SAMPLE: u32 = 2;

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
        for op in self.operators.iter().filter(|op| !op.failures.is_empty()) {
            write!(f, "operator '{}': {} cannot migrate its state: ", op.uid, op.module)?;
            let failures: Vec<String> = op
                .failures
                .iter()
                .map(|x| format!("state '{}' of key '{}' ({}): {}", x.state, x.key, x.entry, x.error))
                .collect();
            write!(f, "{}; ", failures.join("; "))?;
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
        // A RocksDB job's checkpoints are native: a canonical savepoint is read instead.
        let checkpoint = match plan.checkpoints_native() {
            true => None,
            false => plan.latest_checkpoint(0).map_err(UpgradeError::Refused)?,
        };
        let (restore, scratch) = match checkpoint {
            Some(restore) => (restore, None),
            None => {
                let restore = self.trial_savepoint(&job, &plan)?;
                let location = restore.location();
                (restore, Some(location))
            }
        };
        let state_from = restore.location();
        let tried: Result<Vec<OperatorTrial>, String> = replacements
            .iter()
            .map(|(uid, _)| {
                let target = upgraded.trial_target(uid)?;
                let key_groups = trial::sample_key_groups(&target, per_subtask);
                trial::trial(&target, &restore, &key_groups).map_err(|e| format!("operator '{uid}': {e}"))
            })
            .collect();
        if let Some(location) = scratch {
            let disposed = SavepointLocation::parse(&location, std::path::Path::new("/")).and_then(|at| at.dispose());
            if let Err(e) = disposed {
                tracing::warn!("cannot dispose of the trial's savepoint {location}: {e}");
            }
        }
        let operators = tried.map_err(UpgradeError::Refused)?;
        let passed = operators.iter().all(|op| op.failures.is_empty());
        Ok(TrialReport { passed, state_from, operators })
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
