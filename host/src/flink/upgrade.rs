//! `weir flink upgrade`: a Wasm operator's module swapped under a running Flink job, without a
//! Flink restart (the same job id, no failover).
//!
//! The verb checks the new module against the running one's state first (as `weir upgrade`
//! does) and refuses it before anything changes; takes a savepoint (the fallback of a rollback);
//! then writes a control file naming a checkpoint a few ahead of the job's latest. Each subtask
//! of the operator polls that file, starts the new module's worker in the background (compiling
//! it), and switches just after its snapshot of that checkpoint: the checkpoint holds the old
//! module's state, the new module migrates each key's state (its `migrate` export) and processes
//! what follows the barrier, and the next checkpoint records the new module in operator state.
//! Every subtask switches at the same checkpoint, and acknowledges it with the pause it saw.
//!
//! A new module that fails after the switch makes Flink restart the job from its latest
//! checkpoint: when that is the switch's own (the usual case: it fails at once), the verb marks
//! the request rolled back and the subtasks go on with the old module from there, in the same
//! job, exactly once. When a later checkpoint already holds the new module's state, the verb
//! cancels the job and resubmits it with the old modules from the savepoint it took (a Flink
//! restart, as a rollback may be).
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::rest::JobManager;
use super::savepoints::{code_of, module_of};
use crate::checkpoint::savepoint::SavepointOperator;
use crate::job::check_states;
use crate::wasm::WasmEngine;

/// How long subtasks have to switch after the request is written.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(120);

/// What an upgrade came to.
pub enum Upgraded {
    /// Every subtask switched and the job went on through two more checkpoints.
    Switched {
        /// The checkpoint the subtasks switched at.
        checkpoint: u64,
        /// The longest pause a subtask saw, from its last batch of the old module to its switch.
        pause_ms: f64,
        /// The savepoint taken before the switch.
        savepoint: String,
    },
    /// The new module failed; the job went back to the old one.
    RolledBack {
        /// Why the new module failed, as Flink reported it.
        cause: String,
        /// The job that goes on: the same (rolled back in place) or a new one (from the savepoint).
        job_id: String,
    },
}

/// The job's plan, as `weir flink run` left it.
pub fn read_plan(exports: &Path, job_id: &str) -> Result<Value, String> {
    let file = exports.join(job_id).join("plan.json");
    let bytes = std::fs::read(&file).map_err(|_| {
        format!("job {job_id} was not submitted by `weir flink run` from this machine (no {})", file.display())
    })?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", file.display()))
}

/// Checks each `(uid, module)` replacement against the operator's running module; the plan with
/// the new modules.
pub fn check(plan: &Value, replacements: &[(String, PathBuf)], engine: &WasmEngine) -> Result<Value, String> {
    let mut upgraded = plan.clone();
    for (uid, module) in replacements {
        let operators = upgraded["operators"].as_array_mut().ok_or("the plan has no operators")?;
        let known: Vec<String> = operators.iter().filter_map(|o| o["uid"].as_str()).map(str::to_string).collect();
        let op = operators
            .iter_mut()
            .find(|o| o["uid"] == *uid)
            .ok_or_else(|| format!("the job has no operator '{uid}' (it has: {})", known.join(", ")))?;
        let (old, old_states) = module_of(op, engine).map_err(|e| format!("operator '{uid}': {e}"))?;
        let path = module.canonicalize().map_err(|e| format!("module {}: {e}", module.display()))?;
        let mut replaced = op.clone();
        replaced["module"] = json!(path.display().to_string());
        let (new, new_states) = module_of(&replaced, engine).map_err(|e| format!("operator '{uid}': {e}"))?;
        let running = SavepointOperator {
            uid: uid.clone(),
            parallelism: op["parallelism"].as_u64().unwrap_or(1) as u32,
            module: code_of(&old),
            states: old_states,
            files: Vec::new(),
            canary: None,
        };
        check_states(uid, &running, true, &code_of(&new), &new_states)?;
        if new.description.side_outputs != old.description.side_outputs {
            return Err(format!(
                "operator '{uid}': {} declares the side outputs {:?}, the running module {:?}; an upgrade on Flink \
                 keeps the job's graph",
                path.display(),
                new.description.side_outputs,
                old.description.side_outputs
            ));
        }
        *op = replaced;
    }
    Ok(upgraded)
}

/// Carries out an upgrade of Flink job `job_id` to `upgraded` (checked by [`check`]), whose
/// replaced operators are `uids`.
pub fn upgrade(
    jobmanager: &JobManager,
    exports: &Path,
    job_id: &str,
    (plan, upgraded): (&Value, &Value),
    uids: &[String],
) -> Result<Upgraded, String> {
    let state = jobmanager.job(job_id)?["state"].as_str().unwrap_or_default().to_string();
    if state != "RUNNING" {
        return Err(format!("job {job_id} is {state}: only a running job can be upgraded"));
    }
    let control = exports.join(job_id).join("control");
    std::fs::create_dir_all(&control).map_err(|e| format!("cannot create {}: {e}", control.display()))?;
    let request_file = control.join("upgrade.json");
    let previous: Value =
        std::fs::read(&request_file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
    let n = previous["n"].as_u64().unwrap_or(0) + 1;
    let savepoint = jobmanager.savepoint(job_id, None, false)?;
    let failures_before = failures(jobmanager, job_id)?.0;
    let at = jobmanager.latest_checkpoint_id(job_id)? + 3;
    let operators: serde_json::Map<String, Value> = uids
        .iter()
        .filter_map(|uid| {
            let op = upgraded["operators"].as_array()?.iter().find(|o| o["uid"] == *uid)?;
            Some((uid.clone(), op["module"].clone()))
        })
        .collect();
    let mut request = json!({ "n": n, "at": at, "operators": operators });
    write_atomically(&request_file, &request)?;
    let subtasks: u64 = uids
        .iter()
        .filter_map(|uid| plan["operators"].as_array()?.iter().find(|o| o["uid"] == *uid))
        .map(|op| op["parallelism"].as_u64().unwrap_or(1))
        .sum();

    // Every subtask's acknowledgement, unless the job fails first.
    let started = Instant::now();
    let acks = loop {
        let acks = acknowledgements(&control, n)?;
        if acks.len() as u64 >= subtasks {
            break acks;
        }
        let (count, cause) = failures(jobmanager, job_id)?;
        if count > failures_before {
            return roll_back(jobmanager, (&request_file, &mut request), job_id, (plan, &savepoint), cause);
        }
        if started.elapsed() > SWITCH_TIMEOUT {
            request["rolled-back"] = json!(true);
            write_atomically(&request_file, &request)?;
            return Err(format!(
                "only {} of {subtasks} subtasks switched within {SWITCH_TIMEOUT:?} (are checkpoints completing?); the \
                 request is withdrawn",
                acks.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let checkpoint = acks[0].0;
    if let Some(other) = acks.iter().find(|a| a.0 != checkpoint) {
        return Err(format!("subtasks switched at checkpoints {checkpoint} and {} (a weir bug)", other.0));
    }
    let pause_ms = acks.iter().map(|a| a.1).fold(0.0, f64::max);

    // The new module has run when two more checkpoints have completed without a failure.
    let started = Instant::now();
    loop {
        let (count, cause) = failures(jobmanager, job_id)?;
        if count > failures_before {
            return roll_back(jobmanager, (&request_file, &mut request), job_id, (plan, &savepoint), cause);
        }
        if jobmanager.latest_completed_checkpoint_id(job_id)? >= checkpoint + 2 {
            break;
        }
        if started.elapsed() > SWITCH_TIMEOUT {
            return Err(format!("no checkpoint completed after the switch within {SWITCH_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    write_atomically(&exports.join(job_id).join("plan.json"), upgraded)?;
    Ok(Upgraded::Switched { checkpoint, pause_ms, savepoint })
}

/// The subtasks' acknowledgements of request `n`: checkpoint and pause of each.
fn acknowledgements(control: &Path, n: u64) -> Result<Vec<(u64, f64)>, String> {
    let prefix = format!("switched-{n}-");
    let mut acks = Vec::new();
    for entry in std::fs::read_dir(control).map_err(|e| e.to_string())?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".json") {
            let ack: Value = std::fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| format!("{} is unreadable", entry.path().display()))?;
            acks.push((ack["checkpoint"].as_u64().unwrap_or(0), ack["pause-ms"].as_f64().unwrap_or(0.0)));
        }
    }
    Ok(acks)
}

/// How many failures Flink recorded for the job, and the latest one's first line.
fn failures(jobmanager: &JobManager, job_id: &str) -> Result<(usize, String), String> {
    let exceptions = jobmanager.exceptions(job_id)?;
    let entries = exceptions["exceptionHistory"]["entries"].as_array().cloned().unwrap_or_default();
    let cause = entries.first().and_then(|e| e["stacktrace"].as_str()).map(root_cause).unwrap_or_default();
    Ok((entries.len(), cause))
}

/// The cause worth showing in a Java stack trace: a worker's error (the guest's own message),
/// else the innermost `Caused by`, else its first line.
fn root_cause(trace: &str) -> String {
    const WORKER: &str = "weir.flink.Worker$WorkerError: ";
    if let Some(at) = trace.find(WORKER) {
        let message = &trace[at + WORKER.len()..];
        return message.lines().take_while(|l| !l.starts_with('\t')).collect::<Vec<_>>().join("\n");
    }
    let caused = trace.lines().rev().find_map(|l| l.strip_prefix("Caused by: "));
    caused.or_else(|| trace.lines().next()).unwrap_or_default().to_string()
}

/// Takes the job back to the old modules: in place when Flink restored it from the switch's own
/// checkpoint, else by cancelling it and resubmitting it from `savepoint`.
fn roll_back(
    jobmanager: &JobManager,
    (request_file, request): (&Path, &mut Value),
    job_id: &str,
    (plan, savepoint): (&Value, &str),
    cause: String,
) -> Result<Upgraded, String> {
    request["rolled-back"] = json!(true);
    write_atomically(request_file, request)?;
    // In place: the job runs again and completes checkpoints with no further failure.
    let started = Instant::now();
    let (failed, _) = failures(jobmanager, job_id)?;
    let completed = jobmanager.latest_completed_checkpoint_id(job_id)?;
    while started.elapsed() < Duration::from_secs(30) {
        if failures(jobmanager, job_id)?.0 > failed + 1 {
            break;
        }
        if jobmanager.latest_completed_checkpoint_id(job_id)? >= completed + 2 {
            return Ok(Upgraded::RolledBack { cause, job_id: job_id.to_string() });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The new module's state was checkpointed: from the savepoint before the switch, anew.
    jobmanager.cancel(job_id)?;
    let jar = plan["jar-id"].as_str().ok_or("the plan does not name the runner's jar")?;
    let resubmitted = jobmanager.run_plan(jar, plan, Some(savepoint), false)?;
    Ok(Upgraded::RolledBack { cause, job_id: resubmitted })
}

fn write_atomically(path: &Path, value: &Value) -> Result<(), String> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, value.to_string()).map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    std::fs::rename(&partial, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
