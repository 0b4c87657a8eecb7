//! `weir check MODULE.wasm`: what an author of an operator in any language runs before a job
//! does. It loads the module as a job would (a component, the contract version it targets, its
//! imports linked, `describe` called and its description checked) and, given a reference
//! (`--like builtin:keyed-count` or another module), runs both over the same generated events,
//! keyed, in more batches than one so that state is read back from the host, and reports the
//! first line where their outputs differ.
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::wasm::WasmEngine;

#[derive(clap::Args)]
pub(super) struct CheckArgs {
    /// The module (a `.wasm` component) to check.
    module: PathBuf,
    /// A reference to run beside it over the same events: another module's file, or a built-in
    /// operator (`builtin:keyed-count`, the native twin of examples/count).
    #[arg(long, value_name = "MODULE|builtin:NAME")]
    like: Option<String>,
    /// The operators' `config`, as a JSON object.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    config: String,
    /// How many events to generate (the generator's: event i has value `{"seq":i}` and key
    /// `k<i mod keys>`).
    #[arg(long, default_value_t = 5_000)]
    events: u64,
    /// Over how many keys.
    #[arg(long, default_value_t = 100)]
    keys: u64,
    /// Give event i the timestamp i × this (a duration, "1ms"; "1us" puts 1,000 events in a
    /// millisecond) and watermarks that follow them, so that operators with event-time windows
    /// and timers can be compared (the end of the events fires every timer).
    #[arg(long, value_name = "DURATION")]
    event_time_step: Option<String>,
}

pub(super) fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let engine = WasmEngine::new(super::module_cache_dir()).map_err(anyhow::Error::msg)?;
    let module = engine.load_file(&args.module)?;
    let d = &module.description;
    let states: Vec<String> = d
        .states
        .iter()
        .map(|s| format!("{} ({} state, schema version {})", s.name, kind(s.kind), s.schema_version))
        .collect();
    println!(
        "{}: {} {}, built against weir:operator@{} (served), states: {}",
        args.module.display(),
        d.name,
        d.version,
        module.contract_version(),
        if states.is_empty() { "none".to_string() } else { states.join(", ") }
    );
    for (what, names) in [("inputs", &d.inputs), ("side outputs", &d.side_outputs)] {
        if !names.is_empty() {
            println!("  {what}: {}", names.join(", "));
        }
    }
    let Some(like) = &args.like else { return Ok(()) };
    let config: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&args.config).with_context(|| format!("--config {} is not a JSON object", args.config))?;
    let config = toml::Value::try_from(config).context("--config cannot be given to an operator as a table")?;
    anyhow::ensure!(args.events > 0 && args.keys > 0, "--events and --keys must be at least 1");

    let dir = tempfile::Builder::new().prefix("weir-check-").tempdir()?;
    let module = format!("{}\nconfig = {config}", operator_line(&args.module.display().to_string())?);
    let checked = run_beside(dir.path(), "checked", &module, args)?;
    // A built-in operator takes no config.
    let reference = match like.strip_prefix("builtin:") {
        Some(name) => format!("builtin = {}", toml::Value::String(name.to_string())),
        None => format!("{}\nconfig = {config}", operator_line(like)?),
    };
    let expected = run_beside(dir.path(), "reference", &reference, args)?;
    let (ours, theirs) = (lines(&checked)?, lines(&expected)?);
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        if a != b {
            bail!(
                "the outputs differ at line {} of {} events:\n  {}: {a}\n  {like}: {b}",
                i + 1,
                args.events,
                args.module.display()
            );
        }
    }
    if ours.len() != theirs.len() {
        bail!(
            "the outputs differ in length: {} emitted {} lines, {like} {} (they agree on the first {})",
            args.module.display(),
            ours.len(),
            theirs.len(),
            ours.len().min(theirs.len())
        );
    }
    println!("same output as {like}: {} lines from {} events over {} keys", ours.len(), args.events, args.keys);
    Ok(())
}

fn kind(kind: crate::state::StateKind) -> &'static str {
    match kind {
        crate::state::StateKind::Value => "value",
        crate::state::StateKind::Map => "map",
        crate::state::StateKind::List => "list",
        crate::state::StateKind::Broadcast => "broadcast",
    }
}

/// A job file's `module = "…"` line for the module at `path`, made absolute.
fn operator_line(path: &str) -> anyhow::Result<String> {
    let absolute = std::fs::canonicalize(path).with_context(|| format!("module {path} cannot be read"))?;
    Ok(format!("module = {}", toml::Value::String(absolute.display().to_string())))
}

/// Runs generated events through the operator `operator` (its `module` or `builtin` lines) at
/// parallelism 1 into a file sink under `dir/name`; returns the sink's directory.
fn run_beside(dir: &Path, name: &str, operator: &str, args: &CheckArgs) -> anyhow::Result<PathBuf> {
    let out = dir.join(format!("{name}-out"));
    let event_time = match &args.event_time_step {
        Some(step) => format!(
            "event-time-step = {}\nwatermarks = {{ out-of-orderness = \"0s\" }}\n",
            toml::Value::String(step.clone())
        ),
        None => String::new(),
    };
    let job = format!(
        "name = \"check-{name}\"\nparallelism = 1\n\n\
         [[source]]\nuid = \"events\"\ntype = \"generator\"\ncount = {}\nkeys = {}\n{event_time}\n\
         [[operator]]\nuid = \"checked\"\n{operator}\ninput = \"hash\"\n\n\
         [[sink]]\nuid = \"out\"\ntype = \"file\"\npath = {}\n\n\
         [checkpointing]\ninterval = \"0s\"\n",
        args.events,
        args.keys,
        toml::Value::String(out.display().to_string())
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, job)?;
    super::run::run(
        &super::run::RunArgs::quiet(&path),
        super::serve::Access { token: None, allowed_hosts: Vec::new() },
    )
    .with_context(|| format!("the {name} run failed"))?;
    Ok(out)
}

/// The lines a file sink wrote, in its part files' order.
fn lines(out: &Path) -> anyhow::Result<Vec<String>> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(out)?.flatten().map(|e| e.path()).collect();
    parts.sort();
    let mut lines = Vec::new();
    for part in parts.iter().filter(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.'))) {
        lines.extend(std::fs::read_to_string(part)?.lines().map(str::to_string));
    }
    Ok(lines)
}
