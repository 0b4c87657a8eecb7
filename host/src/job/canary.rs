//! Canaries by key range (`docs/upgrades.md`, *Canaries*): an operator's `canary` serves the first
//! share of its key groups with another module. Which module serves which key groups is decided
//! here, for each subtask, from the canary the job runs now and the one its restore saved.
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::Modules;
use super::checks::{check_takes_over, module_code, operator_code};
use super::graph::Dataflow;
use super::plan::{JobPlan, operator_table};
use super::spec::{CanaryAbort, CanarySpec, JobSpec, OperatorSpec};
use crate::checkpoint::Restore;
use crate::checkpoint::savepoint::SavedCanary;
use crate::runtime::Partitioning;
use crate::runtime::key_ranges::{CanaryAbortIf, ModuleVersions};
use crate::state::StateDescriptor;
use crate::wasm::OperatorModule;

/// What each module version of the operators with a canary served, by operator uid.
pub(super) type VersionCounts = Mutex<HashMap<String, Arc<ModuleVersions>>>;

/// A canary as `weir upgrade --canary` asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanarySettings {
    /// Its share of the key groups ("10%").
    pub share: String,
    /// Conditions that abort it by themselves (none given: those of the running canary).
    pub abort_if: Vec<String>,
    /// How it aborts then (none given: as the running canary says, else hand-back).
    pub abort_by: Option<CanaryAbort>,
}

/// Operator `op`'s canary's abort conditions, parsed.
pub(super) fn conditions(op: &OperatorSpec) -> Result<Vec<CanaryAbortIf>, String> {
    let texts = op.canary.iter().flat_map(|c| &c.abort_if);
    texts.map(|text| text.parse().map_err(|e| format!("operator '{}': canary {e}", op.uid))).collect()
}

/// The key groups a canary of `share` ("10%") serves out of `max_parallelism`: the first ones,
/// at least one. Key groups are the unit because state is kept by them: a subtask serves a
/// contiguous range, so its part of the canary's range is one too.
pub(crate) fn key_groups(share: &str, max_parallelism: u32) -> Result<u32, String> {
    let refused = || format!("canary share \"{share}\" is not a percentage from 0 (excluded) to 100, such as \"10%\"");
    let number = share.trim().strip_suffix('%').ok_or_else(refused)?;
    let percent: f64 = number.trim().parse().map_err(|_| refused())?;
    if !(percent > 0.0 && percent <= 100.0) {
        return Err(refused());
    }
    Ok(((percent * f64::from(max_parallelism) / 100.0).round() as u32).clamp(1, max_parallelism))
}

/// The share that [`key_groups`] turns into `key_groups` of `max_parallelism` again: how a
/// canary found in a checkpoint is written into the job.
pub(crate) fn share(key_groups: u32, max_parallelism: u32) -> String {
    format!("{}%", f64::from(key_groups) * 100.0 / f64::from(max_parallelism.max(1)))
}

/// The parts of a subtask's key groups `range` and whether the canary module serves each: split
/// where the canary's key groups end now (`canary`, 0 without one) and where they ended when the
/// state restored was saved (`saved`), so that each part's state was saved by one module.
pub(crate) fn parts(range: Range<u32>, canary: u32, saved: u32) -> Vec<(Range<u32>, bool)> {
    let mut cuts: Vec<u32> = [canary, saved].into_iter().filter(|&c| c > range.start && c < range.end).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut parts = Vec::with_capacity(cuts.len() + 1);
    let mut start = range.start;
    for end in cuts.into_iter().chain([range.end]) {
        parts.push((start..end, start < canary));
        start = end;
    }
    parts
}

/// The canary of an operator, if it has one, checked: `share` a percentage.
pub(crate) fn checked(uid: &str, canary: Option<&CanarySpec>, max_parallelism: u32) -> Result<u32, String> {
    canary.map_or(Ok(0), |c| key_groups(&c.share, max_parallelism).map_err(|e| format!("operator '{uid}': {e}")))
}

/// The checks of operator canaries when a job is planned: a canary runs beside a module, on an
/// operator that reads by key and no broadcast stream, with a share that is a percentage, and its
/// module takes the operator's inputs, has its side outputs and can take over its state.
pub(super) fn check(
    spec: &JobSpec,
    dataflow: &Dataflow,
    modules: &HashMap<String, Arc<OperatorModule>>,
) -> Result<(), String> {
    for (op, inputs) in spec.operators.iter().zip(&dataflow.operators) {
        let Some(canary) = &op.canary else { continue };
        let uid = &op.uid;
        let Some(stable) = op.module.as_ref().and_then(|m| modules.get(m)) else {
            return Err(format!("operator '{uid}': a canary runs beside a module; a builtin operator has none"));
        };
        if !op.keyed() {
            return Err(format!(
                "operator '{uid}': a canary serves a share of the key groups, and this operator does not read by key \
                 (`input = \"hash\"`)"
            ));
        }
        if inputs.iter().any(|i| i.partitioning == Partitioning::Broadcast) {
            return Err(format!(
                "operator '{uid}' reads a broadcast stream: a canary cannot run beside it (both modules would \
                 process each broadcast event, and its output would be emitted twice); upgrade it instead"
            ));
        }
        key_groups(&canary.share, spec.max_parallelism).map_err(|e| format!("operator '{uid}': {e}"))?;
        let module = modules.get(&canary.module).ok_or(format!("operator '{uid}': canary module not resolved"))?;
        super::build::check_module_inputs(uid, module, inputs, true)?;
        // Side outputs are numbered as the operator's module declares them: the canary's must
        // mean the same at each number, and include every one the job reads.
        let (sides, canary_sides) = (&stable.description.side_outputs, &module.description.side_outputs);
        let reads = dataflow.operators.iter().chain(&dataflow.sinks).flatten();
        // The quarantine's is the host's, after the operator's module's, whichever module failed.
        let host_side = |s: &String| op.quarantines() && s == crate::wasm::quarantine::SIDE_OUTPUT;
        let read = reads
            .filter(|i| i.from == *uid)
            .filter_map(|i| i.output.as_ref())
            .find(|s| !canary_sides.contains(s) && !host_side(s));
        if !sides.starts_with(canary_sides) || read.is_some() {
            let what = match read {
                Some(read) => {
                    format!("the job reads its side output '{read}', which the canary's module does not declare")
                }
                None => "a canary's module declares the first of the side outputs its operator's module does, in order"
                    .to_string(),
            };
            return Err(format!(
                "operator '{uid}': its canary's module declares the side outputs {canary_sides:?} and its module \
                 {sides:?}: {what}"
            ));
        }
        let (code, states) = module_code(module, true);
        check_takes_over(uid, module_code(stable, true), &code, &states)?;
        conditions(op)?;
        // An abort by itself is carried out as the job file says: one that hands back must be
        // able to.
        if !canary.abort_if.is_empty() && canary.abort_by.unwrap_or(CanaryAbort::HandBack) == CanaryAbort::HandBack {
            let (old_code, old_states) = module_code(stable, true);
            check_takes_over(uid, (code, states), &old_code, &old_states).map_err(|e| {
                format!(
                    "{e}: its canary could not hand its key groups back when an abort condition holds; set \
                     `abort-by = \"rollback\"` (--abort-by rollback)"
                )
            })?;
        }
    }
    Ok(())
}

/// What a savepoint records of operator `op`'s canary, if it runs one.
pub(super) fn saved(
    op: &OperatorSpec,
    modules: &HashMap<String, Arc<OperatorModule>>,
    max_parallelism: u32,
) -> Option<SavedCanary> {
    let canary = op.canary.as_ref()?;
    let (module, states) = module_code(modules.get(&canary.module)?, op.keyed());
    Some(SavedCanary { module, states, key_groups: key_groups(&canary.share, max_parallelism).ok()? })
}

/// The operators of `spec` with a canary, and its module.
fn canaries(spec: &JobSpec) -> Vec<(String, String)> {
    spec.operators.iter().filter_map(|op| Some((op.uid.clone(), op.canary.as_ref()?.module.clone()))).collect()
}

/// The `canary` table of `canary`.
fn canary_table(canary: CanarySpec) -> toml::Value {
    toml::Value::try_from(canary).unwrap_or_else(|_| toml::Value::Table(toml::Table::new()))
}

impl JobPlan {
    /// Where its operators' subtasks' parts begin: per operator with a canary, the end of its key
    /// groups (the state handed over to its runs is split there).
    pub fn canary_cuts(&self) -> HashMap<String, Vec<u32>> {
        let Ok(spec) = self.spec() else { return HashMap::new() };
        let cut = |op: &OperatorSpec| {
            Some((op.uid.clone(), vec![key_groups(&op.canary.as_ref()?.share, spec.max_parallelism).ok()?]))
        };
        spec.operators.iter().filter_map(cut).collect()
    }

    /// Whether a step from `previous` to this job (a canary's, or an upgrade of a job running
    /// one) can hand each part's state over in place: the state is in memory (a RocksDB database
    /// is not split) and in both, each canary's module declares its operator's states in the same
    /// order.
    pub fn hands_canaries_over(&self, previous: &JobPlan) -> bool {
        let alike = |plan: &JobPlan| {
            let Ok(spec) = plan.spec() else { return false };
            spec.operators.iter().all(|op| match (op.module.as_ref(), op.canary.as_ref()) {
                (Some(module), Some(canary)) => {
                    match (plan.modules().get(module), plan.modules().get(&canary.module)) {
                        (Some(stable), Some(canary)) => {
                            StateDescriptor::same_states(&module_code(stable, true).1, &module_code(canary, true).1)
                        }
                        _ => false,
                    }
                }
                _ => true,
            })
        };
        !self.checkpoints_native() && alike(self) && alike(previous)
    }

    /// Whether one of its operators runs a canary.
    pub fn has_canary(&self) -> bool {
        self.spec().is_ok_and(|spec| spec.operators.iter().any(|op| op.canary.is_some()))
    }

    /// The same job with a canary of `share` ("10%") on each `(uid, module reference)` operator,
    /// or, with none named, on each operator that runs a canary now (a new share); and the
    /// operators whose canary changes. The canary module must take over the state of the
    /// operator's module and of the canary it replaces.
    pub fn canaried(
        &self,
        replacements: &[(String, String)],
        settings: &CanarySettings,
        modules: &mut dyn Modules,
    ) -> Result<(JobPlan, Vec<String>), String> {
        let spec = self.spec()?;
        key_groups(&settings.share, spec.max_parallelism)?;
        let targets = match replacements {
            [] => canaries(&spec),
            named => named.to_vec(),
        };
        if targets.is_empty() {
            return Err("the job runs no canary: name the operator and its canary's module (UID=MODULE)".to_string());
        }
        let next = self.edited(modules, |operators| {
            for (uid, module) in &targets {
                let running = spec.operators.iter().find(|op| op.uid == *uid).and_then(|op| op.canary.clone());
                let (abort_if, abort_by) = match (&settings.abort_if[..], settings.abort_by, running) {
                    ([], None, Some(running)) => (running.abort_if, running.abort_by),
                    (abort_if, abort_by, _) => (abort_if.to_vec(), abort_by),
                };
                let canary = CanarySpec { module: module.clone(), share: settings.share.clone(), abort_if, abort_by };
                operator_table(operators, uid)?.insert("canary".to_string(), canary_table(canary));
            }
            Ok(())
        })?;
        let next_spec = next.spec()?;
        for (uid, _) in &targets {
            let before = spec.operators.iter().find(|op| op.uid == *uid);
            let after = next_spec.operators.iter().find(|op| op.uid == *uid);
            let (Some(before), Some(after)) = (before, after) else { continue };
            let (Some(canary), Some(previous)) = (after.canary.as_ref(), before.canary.as_ref()) else { continue };
            let code = |canary: &CanarySpec, modules: &HashMap<String, Arc<OperatorModule>>| {
                modules.get(&canary.module).map(|m| module_code(m, true))
            };
            if let (Some(previous), Some((code, states))) =
                (code(previous, self.modules()), code(canary, next.modules()))
            {
                check_takes_over(uid, previous, &code, &states)?;
            }
        }
        Ok((next, targets.into_iter().map(|(uid, _)| uid).collect()))
    }

    /// The first canary whose abort condition holds of what its module versions counted in this
    /// plan's runs: why, and how it is to abort.
    pub fn canary_abort_due(&self) -> Option<(String, CanaryAbort)> {
        let spec = self.spec().ok()?;
        let counts = self.version_counts().lock().unwrap_or_else(|e| e.into_inner());
        spec.operators.iter().find_map(|op| {
            let canary = op.canary.as_ref()?;
            let why = crate::runtime::key_ranges::judge(&conditions(op).ok()?, counts.get(&op.uid)?)?;
            Some((format!("operator '{}': {why}", op.uid), canary.abort_by.unwrap_or(CanaryAbort::HandBack)))
        })
    }

    /// The same job with each canary promoted: its module runs the operator's every key group;
    /// and the operators promoted.
    pub fn promoted(&self, modules: &mut dyn Modules) -> Result<(JobPlan, Vec<String>), String> {
        let targets = canaries(&self.spec()?);
        if targets.is_empty() {
            return Err("the job runs no canary to promote".to_string());
        }
        let next = self.edited(modules, |operators| {
            for (uid, module) in &targets {
                let op = operator_table(operators, uid)?;
                op.insert("module".to_string(), toml::Value::String(module.clone()));
                op.remove("canary");
            }
            Ok(())
        })?;
        Ok((next, targets.into_iter().map(|(uid, _)| uid).collect()))
    }

    /// The same job with each canary's key groups handed back to the operator's own module,
    /// with the state the canary left: refused when that module cannot read it (the canary
    /// changed a state's schema), saying to roll back instead; and the operators concerned.
    pub fn canary_handed_back(&self, modules: &mut dyn Modules) -> Result<(JobPlan, Vec<String>), String> {
        let spec = self.spec()?;
        let targets = canaries(&spec);
        if targets.is_empty() {
            return Err("the job runs no canary to abort".to_string());
        }
        for op in spec.operators.iter().filter(|op| op.canary.is_some()) {
            let (Some(stable), Some(canary)) =
                (operator_code(op, self.modules()), saved(op, self.modules(), spec.max_parallelism))
            else {
                continue;
            };
            check_takes_over(&op.uid, (canary.module, canary.states), &stable.0, &stable.1).map_err(|e| {
                format!(
                    "{e}. The canary saved its state in a layout the operator's own module cannot read: abort it \
                     with `rollback` instead, which goes back to the savepoint taken when the canary started (the \
                     output since is written again, exactly once)"
                )
            })?;
        }
        let next = self.edited(modules, |operators| {
            for (uid, _) in &targets {
                operator_table(operators, uid)?.remove("canary");
            }
            Ok(())
        })?;
        Ok((next, targets.into_iter().map(|(uid, _)| uid).collect()))
    }

    /// The same job with the canaries `restore` holds that the job file does not name (a run
    /// resumed after a kill from its own checkpoint: the canary goes on), each canary's module
    /// found by its SHA-256 in `modules`; `None` when there are none.
    pub fn with_restored_canaries(
        &self,
        restore: &Restore,
        modules: &mut dyn Modules,
    ) -> Result<Option<JobPlan>, String> {
        let spec = self.spec()?;
        let found: Vec<(String, String, u32)> = spec
            .operators
            .iter()
            .filter(|op| op.canary.is_none())
            .filter_map(|op| restore.canary(&op.uid).map(|(sha, end)| (op.uid.clone(), sha.to_string(), end)))
            .collect();
        if found.is_empty() {
            return Ok(None);
        }
        let plan = self.edited(modules, |operators| {
            for (uid, sha, end) in &found {
                let share = share(*end, spec.max_parallelism);
                let module = format!("sha256:{sha}");
                let table = canary_table(CanarySpec { module, share, abort_if: Vec::new(), abort_by: None });
                operator_table(operators, uid)?.insert("canary".to_string(), table);
            }
            Ok(())
        });
        plan.map(Some).map_err(|e| {
            let (uid, sha, end) = &found[0];
            format!(
                "{} holds operator '{uid}' in a canary (its first {end} key groups served by module sha256:{sha}), \
                 which cannot go on here: {e}",
                restore.describe()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_to_key_groups_and_back() {
        assert_eq!(key_groups("10%", 128), Ok(13));
        assert_eq!(key_groups("50%", 128), Ok(64));
        assert_eq!(key_groups("100%", 128), Ok(128));
        assert_eq!(key_groups("0.1%", 128), Ok(1));
        for bad in ["0%", "101%", "10", "ten%", "-5%", "NaN%"] {
            assert!(key_groups(bad, 128).is_err(), "{bad}");
        }
        for n in 1..=128 {
            assert_eq!(key_groups(&share(n, 128), 128), Ok(n));
        }
    }

    #[test]
    fn parts_split_where_either_canary_ends() {
        assert_eq!(parts(0..64, 13, 0), vec![(0..13, true), (13..64, false)]);
        assert_eq!(parts(64..128, 13, 0), vec![(64..128, false)]);
        assert_eq!(parts(0..64, 64, 13), vec![(0..13, true), (13..64, true)]);
        assert_eq!(parts(0..128, 0, 13), vec![(0..13, false), (13..128, false)]);
        assert_eq!(parts(10..20, 13, 13), vec![(10..13, true), (13..20, false)]);
    }
}
