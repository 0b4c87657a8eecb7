//! Checks of a job file that hold before anything is opened (names, uids, counts), and of the
//! code each operator runs against the state it is to take over.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::spec::JobSpec;
use super::spec::OperatorSpec;

use crate::checkpoint::savepoint::{OperatorCode, SavepointOperator};
use crate::state::StateDescriptor;

use crate::key_group::UPPER_BOUND_MAX_PARALLELISM;
use crate::wasm::OperatorModule;

/// The code operator `op` runs and the states it declares; `None` for an unknown builtin or an
/// unresolved module.
pub(crate) fn operator_code(
    op: &OperatorSpec,
    modules: &HashMap<String, Arc<OperatorModule>>,
) -> Option<(OperatorCode, Vec<StateDescriptor>)> {
    match (&op.module, &op.builtin) {
        (Some(reference), None) => Some(module_code(modules.get(reference)?, op.keyed())),
        (None, Some(name)) => Some((OperatorCode::Builtin { builtin: name.clone() }, crate::builtin::states(name)?)),
        _ => None,
    }
}

/// The code of `module` and the states its snapshots hold: the host's timers too, when it can set
/// them (`keyed`).
pub(crate) fn module_code(module: &OperatorModule, keyed: bool) -> (OperatorCode, Vec<StateDescriptor>) {
    let d = &module.description;
    let code = OperatorCode::Module { sha256: module.sha256.clone(), name: d.name.clone(), version: d.version.clone() };
    (code, module.states(keyed))
}

/// Whether `code`, declaring `declared`, can take over the state of operator `uid` that the code
/// `before` saved, declaring its states (an upgrade, a canary, its promotion or its abort).
pub(crate) fn check_takes_over(
    uid: &str,
    (module, states): (OperatorCode, Vec<StateDescriptor>),
    code: &OperatorCode,
    declared: &[StateDescriptor],
) -> Result<(), String> {
    let saved =
        SavepointOperator { uid: uid.to_string(), parallelism: 0, module, states, files: Vec::new(), canary: None };
    check_states(uid, &saved, true, code, declared)
}

/// Whether `code`, declaring `declared`, can take over operator `uid`'s state as `saved` records
/// it: every saved state declared again with the same kind, and the same schema version or one
/// that migrates from the saved one. A saved state no longer declared is refused when the saved
/// operator `has_state` that would be lost.
pub(crate) fn check_states(
    uid: &str,
    saved: &SavepointOperator,
    has_state: bool,
    code: &OperatorCode,
    declared: &[StateDescriptor],
) -> Result<(), String> {
    let kind = |s: &StateDescriptor| format!("{:?} state, schema version {}", s.kind, s.schema_version).to_lowercase();
    for s in &saved.states {
        match declared.iter().find(|d| d.name == s.name) {
            // Entries of a state with a time-to-live carry their expiry: it cannot come or go.
            Some(d) if d.time_to_live.is_some() != s.time_to_live.is_some() => {
                let with = |t: Option<u64>| if t.is_some() { "with a time-to-live" } else { "without a time-to-live" };
                return Err(format!(
                    "operator '{uid}': state '{}' was saved {} by {}, and {code} declares it {}; a state's \
                     time-to-live may change but not be added or removed: declare a new state for that",
                    s.name,
                    with(s.time_to_live),
                    saved.module,
                    with(d.time_to_live)
                ));
            }
            Some(d)
                if d.kind == s.kind
                    && (d.schema_version == s.schema_version || d.migrates_from.contains(&s.schema_version)) => {}
            Some(d) => {
                let hint = if d.kind == s.kind {
                    format!(
                        " (to read it, the code must list schema version {} in the state's `migrates-from` and \
                         export `migrate`)",
                        s.schema_version
                    )
                } else {
                    String::new()
                };
                return Err(format!(
                    "operator '{uid}': state '{}' was saved as {} by {}, and {code} declares it as {}; \
                     that code cannot read it{hint}",
                    s.name,
                    kind(s),
                    saved.module,
                    kind(d)
                ));
            }
            None if has_state => {
                return Err(format!(
                    "operator '{uid}': the savepoint holds state '{}' (saved by {}), which {code} does not \
                     declare; pass --allow-non-restored-state to start without it",
                    s.name, saved.module
                ));
            }
            None => {}
        }
    }
    Ok(())
}

/// Checks that hold before anything is opened: names, uids, counts, the graph; returns the graph
/// resolved.
pub(crate) fn check_shape(spec: &JobSpec) -> Result<super::graph::Dataflow, String> {
    if spec.name.trim().is_empty() {
        return Err("`name` must not be empty".to_string());
    }
    check_identifier("`name`", &spec.name)?;
    if !(1..=UPPER_BOUND_MAX_PARALLELISM).contains(&spec.max_parallelism) {
        return Err(format!(
            "`max-parallelism` must be between 1 and {UPPER_BOUND_MAX_PARALLELISM}, not {}",
            spec.max_parallelism
        ));
    }
    check_parallelism("the job", spec.parallelism, spec.max_parallelism)?;
    if spec.sources.is_empty() {
        return Err("the job has no [[source]]".to_string());
    }
    if spec.sinks.is_empty() {
        return Err("the job has no [[sink]]".to_string());
    }
    let uids = spec
        .sources
        .iter()
        .map(|s| &s.uid)
        .chain(spec.operators.iter().map(|o| &o.uid))
        .chain(spec.sinks.iter().map(|s| &s.uid));
    let mut seen = HashSet::new();
    for uid in uids {
        if uid.is_empty() {
            return Err("a uid must not be empty".to_string());
        }
        check_identifier("uid", uid)?;
        if !seen.insert(uid) {
            return Err(format!("uid '{uid}' is used twice; every source, operator and sink needs its own uid"));
        }
    }
    super::graph::resolve(spec)
}

/// The longest job name or uid, in bytes.
pub(super) const MAX_IDENTIFIER: usize = 100;

/// A job name or uid names files and threads: printable, at most [`MAX_IDENTIFIER`] bytes, and
/// short enough that the file names made of it (non-alphanumerics escaped) fit in 255 bytes.
pub(super) fn check_identifier(what: &str, text: &str) -> Result<(), String> {
    use crate::checkpoint::paths;
    let shown: String = text.chars().take(40).collect::<String>().escape_debug().to_string();
    if text.chars().any(char::is_control) {
        return Err(format!("{what} \"{shown}\" contains a control character; use printable characters only"));
    }
    let longest_file =
        // The longest: a part of a subtask's key groups (a canary's).
        paths::state_file_name(&format!("{}-{}", paths::native_dir_name(text, u32::MAX), u32::MAX)).len().max(paths::savepoint_dir(text, "0".repeat(12).as_str()).len());
    if text.len() > MAX_IDENTIFIER || longest_file > 255 {
        return Err(format!(
            "{what} \"{shown}…\" is too long: at most {MAX_IDENTIFIER} bytes, fewer with characters other than \
             letters, digits, '.', '_' and '-' (file names are made of it)"
        ));
    }
    Ok(())
}

pub(super) fn check_parallelism(what: &str, parallelism: u32, max_parallelism: u32) -> Result<(), String> {
    if parallelism == 0 || parallelism > max_parallelism {
        return Err(format!(
            "{what}: parallelism must be between 1 and max-parallelism ({max_parallelism}), not {parallelism}"
        ));
    }
    Ok(())
}
