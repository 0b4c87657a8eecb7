//! Shadow runs asked of a running job (`weir shadow`): a new module beside an operator's, on its
//! live input and a copy-on-write view of its state, its output compared and never sent on (see
//! [`crate::runtime::shadow`]). Promoting one is an ordinary upgrade, which ends it.
use super::{Jobs, SavepointError, UpgradeError};
use crate::control::lock;
use crate::job::Modules;
use crate::runtime::shadow::{ShadowOptions, ShadowReport, ShadowRun};
use crate::state::StateDescriptor;

/// Bytes of memory a shadow run may cost unless asked otherwise.
pub const SHADOW_MEMORY_LIMIT: u64 = 256 << 20;
/// Longest a request waits for the operators' subtasks to join (each does at its next batch),
/// so that its answer says how they started.
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Jobs {
    /// Starts shadow runs beside running job `id`'s operators, `(uid, module reference)` each
    /// resolved by `modules`; returns the job's shadow reports once their subtasks have joined
    /// (or a second has passed). A module that could not take over the operator's state in place
    /// is refused, and so is a job keeping state in RocksDB.
    pub fn shadow(
        &self,
        id: &str,
        replacements: &[(String, String)],
        modules: &mut dyn Modules,
        options: &ShadowOptions,
    ) -> Result<Vec<ShadowReport>, UpgradeError> {
        let (job, plan) = self.running(id, "be shadowed")?;
        if plan.checkpoints_native() {
            return Err(UpgradeError::Refused(format!(
                "job {id} keeps its state in RocksDB, which a shadow cannot read beside the operator yet: shadow runs \
                 need `[state] backend = \"memory\"` (a trial, `weir upgrade --trial`, works with either)"
            )));
        }
        let upgraded = plan.upgraded(replacements, modules).map_err(UpgradeError::Refused)?;
        let mut runs = Vec::new();
        let mut subtasks = Vec::new();
        for (uid, _) in replacements {
            let live = plan.trial_target(uid).map_err(UpgradeError::Refused)?;
            let shadow = upgraded.trial_target(uid).map_err(UpgradeError::Refused)?;
            if !StateDescriptor::same_states(&live.module.states(live.keyed), &shadow.module.states(shadow.keyed)) {
                return Err(UpgradeError::Refused(format!(
                    "operator '{uid}': {} does not declare the states of {} in the same order, so it cannot run on the \
                     live state beside it (an upgrade can still take it over: try `weir upgrade --trial`)",
                    shadow.module.label(),
                    live.module.label()
                )));
            }
            subtasks.push((uid.clone(), shadow.parallelism));
            runs.push(ShadowRun::new(uid, shadow.module.label(), Box::new(shadow), options.clone()));
        }
        runs.into_iter().for_each(|run| job.handles.shadows.start(run));
        let started = std::time::Instant::now();
        loop {
            let reports = job.handles.shadows.reports();
            let joined = |(uid, parallelism): &(String, u32)| {
                reports.iter().any(|r| &r.uid == uid && (r.subtasks >= *parallelism || r.status == "stopped"))
            };
            if subtasks.iter().all(joined) || started.elapsed() >= JOIN_WAIT {
                return Ok(reports);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Job `id`'s shadow runs, running and stopped; `None` for an unknown job.
    pub fn shadow_reports(&self, id: &str) -> Option<Vec<ShadowReport>> {
        lock(&self.jobs).get(id).map(|job| job.handles.shadows.reports())
    }

    /// Stops job `id`'s shadow runs; their reports.
    pub fn stop_shadows(&self, id: &str) -> Result<Vec<ShadowReport>, SavepointError> {
        let job = lock(&self.jobs).get(id).cloned().ok_or_else(|| SavepointError::NotFound(id.to_string()))?;
        job.handles.shadows.stop_all("stopped on request");
        Ok(job.handles.shadows.reports())
    }
}
