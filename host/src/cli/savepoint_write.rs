//! `weir savepoint write`: a new canonical savepoint from an existing one (never changed) or
//! from nothing, by operations given as JSON lines (`--ops`) or flags (see
//! [`crate::checkpoint::edit`]).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::checkpoint::edit::{EditOp, SavepointEditor};
use crate::job::{ModuleFiles, Modules};
use crate::wasm::WasmEngine;

/// `weir savepoint write`'s arguments. Operations apply in this order: the lines of --ops, then
/// the flags in the order listed here.
#[derive(clap::Args)]
pub(crate) struct WriteArgs {
    /// Where the new savepoint goes: a directory that does not exist yet (or is empty).
    out: String,
    /// The savepoint to start from (default: nothing; then --job gives the operators).
    #[arg(long, value_name = "SAVEPOINT")]
    pub(super) from: Option<String>,
    /// The job file the savepoint is for: its operators' modules declare their states, which
    /// state written to an operator the savepoint lacks needs.
    #[arg(long, value_name = "JOB")]
    job: Option<PathBuf>,
    /// Operations as JSON lines, such as {"op":"set","operator":"count","key":"alice",
    /// "state":"count","value":7} (ops: set, delete, bootstrap, drop-state, rename-state,
    /// drop-operator, rename-operator; docs/state-offline.md).
    #[arg(long, value_name = "FILE")]
    ops: Option<PathBuf>,
    /// The operator the flags below (up to --rename-state) act on.
    #[arg(long, value_name = "UID")]
    operator: Option<String>,
    /// Bootstrap the operator's state from JSON lines {"key": …, "<state>": <value>, …}.
    #[arg(long, value_name = "FILE", requires = "operator")]
    bootstrap: Vec<String>,
    /// Set a state of a key: KEY STATE=JSON (a map state's entries as an object, a list's
    /// elements as an array). Repeatable.
    #[arg(long, num_args = 2, value_names = ["KEY", "STATE=JSON"], requires = "operator")]
    set: Vec<String>,
    /// Delete a key's state (timers too). Repeatable.
    #[arg(long, value_name = "KEY", requires = "operator")]
    delete: Vec<String>,
    /// Delete the state of every key starting with PREFIX. Repeatable.
    #[arg(long, value_name = "PREFIX", requires = "operator")]
    delete_prefix: Vec<String>,
    /// Drop one of the operator's states.
    #[arg(long, value_name = "STATE", requires = "operator")]
    drop_state: Vec<String>,
    /// Rename one of the operator's states: OLD=NEW.
    #[arg(long, value_name = "OLD=NEW", requires = "operator")]
    rename_state: Vec<String>,
    /// Drop an operator and its state. Repeatable.
    #[arg(long, value_name = "UID")]
    drop_operator: Vec<String>,
    /// Give an operator's state to another uid: OLD=NEW. Repeatable.
    #[arg(long, value_name = "OLD=NEW")]
    rename_operator: Vec<String>,
    /// Key groups of a savepoint written from nothing (default: the job file's max-parallelism,
    /// else 128).
    #[arg(long, value_name = "N", conflicts_with = "from")]
    max_parallelism: Option<u32>,
}

/// Runs `weir savepoint write`; `from` is `--from` resolved (a library name to its path).
pub(super) fn write(args: &WriteArgs, from: Option<String>) -> anyhow::Result<()> {
    let job = match &args.job {
        None => None,
        Some(path) => {
            let text = crate::job::read(path)?;
            Some((
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                crate::job::parse(&text, &format!("job file {}", path.display()))?,
            ))
        }
    };
    let mut editor = match (&from, &job) {
        (Some(from), _) => SavepointEditor::from_savepoint(from, Path::new(".")).map_err(anyhow::Error::msg)?,
        (None, Some((_, spec))) => {
            SavepointEditor::empty(&spec.name, args.max_parallelism.unwrap_or(spec.max_parallelism))
        }
        (None, None) => SavepointEditor::empty("written", args.max_parallelism.unwrap_or(128)),
    };
    if let Some((base, spec)) = &job {
        declare_operators(&mut editor, base, spec)?;
    }
    for op in operations(args)? {
        editor.apply(op, Path::new(".")).map_err(anyhow::Error::msg)?;
    }
    let job_id = crate::job::new_job_id(editor.job());
    let metadata = editor.write(&args.out, Path::new("."), job_id).map_err(anyhow::Error::msg)?;
    let operators: Vec<&str> = metadata.operators.iter().map(|op| op.uid.as_str()).collect();
    eprintln!(
        "weir savepoint write: wrote a savepoint of job '{}' ({} key groups; operators: {})",
        metadata.job,
        metadata.max_parallelism,
        if operators.is_empty() { "none".to_string() } else { operators.join(", ") }
    );
    println!("{}", args.out);
    Ok(())
}

/// Declares the states of every operator of the job file to `editor`.
fn declare_operators(editor: &mut SavepointEditor, base: &Path, spec: &crate::job::JobSpec) -> anyhow::Result<()> {
    let engine = WasmEngine::new(super::module_cache_dir()).map_err(anyhow::Error::msg)?;
    let mut files = ModuleFiles::new(base.to_path_buf(), &engine);
    let mut modules = HashMap::new();
    for op in &spec.operators {
        let Some(reference) = &op.module else { continue };
        let module = files.resolve(reference).map_err(|e| anyhow::anyhow!("operator '{}': {e}", op.uid))?;
        modules.insert(reference.clone(), module);
    }
    for op in &spec.operators {
        let Some((code, states)) = crate::job::operator_code(op, &modules) else { continue };
        editor.declare(&op.uid, code, op.parallelism.unwrap_or(spec.parallelism), states);
    }
    Ok(())
}

/// The operations `args` give, in the order they apply.
fn operations(args: &WriteArgs) -> anyhow::Result<Vec<EditOp>> {
    let mut ops = Vec::new();
    if let Some(path) = &args.ops {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let op = serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), n + 1))?;
            ops.push(op);
        }
    }
    let split = |pair: &str, what: &str| -> anyhow::Result<(String, String)> {
        match pair.split_once('=') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
            _ => bail!("{what} is OLD=NEW, not '{pair}'"),
        }
    };
    if let Some(operator) = &args.operator {
        let operator = operator.clone();
        for file in &args.bootstrap {
            ops.push(EditOp::Bootstrap { operator: operator.clone(), file: file.clone() });
        }
        for pair in args.set.chunks(2) {
            let [key, assignment] = pair else { bail!("--set takes KEY STATE=JSON") };
            let Some((state, json)) = assignment.split_once('=') else {
                bail!("--set {key} {assignment}: the second value is STATE=JSON, such as count=7")
            };
            let value = serde_json::from_str(json).with_context(|| {
                format!("--set {key} {assignment}: the value is not JSON (a string needs its quotes)")
            })?;
            let (key, state) = (key.clone(), state.to_string());
            ops.push(EditOp::Set { operator: operator.clone(), key, state, map_key: None, value });
        }
        for key in &args.delete {
            ops.push(EditOp::Delete { operator: operator.clone(), key: Some(key.clone()), prefix: None });
        }
        for prefix in &args.delete_prefix {
            ops.push(EditOp::Delete { operator: operator.clone(), key: None, prefix: Some(prefix.clone()) });
        }
        for state in &args.drop_state {
            ops.push(EditOp::DropState { operator: operator.clone(), state: state.clone() });
        }
        for pair in &args.rename_state {
            let (state, to) = split(pair, "--rename-state")?;
            ops.push(EditOp::RenameState { operator: operator.clone(), state, to });
        }
    }
    for operator in &args.drop_operator {
        ops.push(EditOp::DropOperator { operator: operator.clone() });
    }
    for pair in &args.rename_operator {
        let (operator, to) = split(pair, "--rename-operator")?;
        ops.push(EditOp::RenameOperator { operator, to });
    }
    Ok(ops)
}
