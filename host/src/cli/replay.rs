//! `weir replay`: one key of a savepoint through an operator's module, event by event, printing
//! the key's state before and after each event, what the operator emitted and the timers it set
//! and fired, as JSON lines. Processing time is virtual (from the savepoint's time, one
//! millisecond a step), so two replays print the same. Nothing reaches the savepoint or a sink.
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::savepoint::{bytes_json, value_fields};
use crate::checkpoint::Restore;
use crate::checkpoint::savepoint::{OperatorCode, SavepointLocation};
use crate::state::{StateKind, ttl};
use crate::wasm::WasmEngine;
use crate::wasm::replay::{KeyEntry, KeyReplay, KeyTimer};
use crate::wasm::trial::TrialTarget;

/// `weir replay`'s arguments.
#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// The savepoint (or checkpoint) directory or URL.
    savepoint: String,
    /// The operator whose state and module to replay.
    #[arg(long, value_name = "UID")]
    operator: String,
    /// The key: its state is read from the savepoint, and every event gets it.
    #[arg(long, value_name = "KEY")]
    key: String,
    /// The events, one per line, each the value the operator receives (JSON lines, as a file
    /// source reads them).
    #[arg(long, value_name = "FILE")]
    events: PathBuf,
    /// The job file the savepoint was taken of: the operator's module and config come from it.
    #[arg(long, value_name = "JOB", required_unless_present = "module")]
    job: Option<PathBuf>,
    /// Replay this module instead (a fix to try); its config from --job, else --config.
    #[arg(long, value_name = "MODULE")]
    module: Option<PathBuf>,
    /// The operator's config as a JSON object (default: the job file's, else {}).
    #[arg(long, value_name = "JSON")]
    config: Option<String>,
    /// The JSON field of each event holding its event time in milliseconds (the watermark
    /// follows the highest seen; at the end, event time ends and every event-time timer fires).
    #[arg(long, value_name = "FIELD")]
    timestamp_field: Option<String>,
}

/// Runs `weir replay`.
pub(super) fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let location = SavepointLocation::parse(&args.savepoint, Path::new(".")).map_err(anyhow::Error::msg)?;
    let metadata = location.metadata().map_err(anyhow::Error::msg)?;
    let Some(saved) = metadata.operators.iter().find(|op| op.uid == args.operator) else {
        let known: Vec<&str> = metadata.operators.iter().map(|op| op.uid.as_str()).collect();
        bail!("the savepoint has no operator '{}' (it has: {})", args.operator, known.join(", "));
    };
    let (module_path, config, limits) = module_of(args)?;
    let engine = WasmEngine::new(super::module_cache_dir()).map_err(anyhow::Error::msg)?;
    let module = engine.load_file(&module_path).map_err(|e| anyhow::anyhow!("{}: {e}", module_path.display()))?;
    if let OperatorCode::Module { sha256, .. } = &saved.module
        && *sha256 != module.sha256
    {
        eprintln!(
            "weir replay: replaying with {} (sha256:{}), not the module that saved the state ({})",
            module_path.display(),
            &module.sha256[..12],
            saved.module
        );
    }
    let restore = Restore::savepoint(&args.savepoint, Path::new(".")).map_err(anyhow::Error::msg)?;
    let target = TrialTarget {
        uid: args.operator.clone(),
        module: Arc::new(module),
        config,
        keyed: true,
        limits,
        parallelism: 1,
        max_parallelism: metadata.max_parallelism,
        broadcast_inputs: Vec::new(),
    };
    let events = std::fs::File::open(&args.events).with_context(|| format!("cannot open {}", args.events.display()))?;
    // Processing time starts when the savepoint was taken and moves a millisecond a step.
    let mut now = metadata.taken_at as i64;
    ttl::set_virtual_now(now);
    let mut replay = KeyReplay::open(&target, Arc::new(restore), args.key.as_bytes()).map_err(anyhow::Error::msg)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut entries, mut timers) = replay.state().map_err(anyhow::Error::msg)?;
    writeln!(out, "{}", json!({ "restored": state_json(&entries), "timers": timers_json(&timers) }))?;
    let mut watermark = i64::MIN;
    for (n, line) in std::io::BufReader::new(events).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", args.events.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let timestamp = match &args.timestamp_field {
            None => None,
            Some(field) => Some(millis(&line, field).with_context(|| {
                format!("line {} of {}: no number of milliseconds in `{field}`", n + 1, args.events.display())
            })?),
        };
        now += 1;
        ttl::set_virtual_now(now);
        let output = replay.process(line.as_bytes(), timestamp).map_err(|e| anyhow::anyhow!("event {}: {e}", n + 1))?;
        let (after, after_timers) = replay.state().map_err(anyhow::Error::msg)?;
        let step = Step {
            event: Some(n + 1),
            value: Some(&line),
            timestamp,
            watermark: None,
            before: Some(state_json(&entries)),
            output,
            changes: TimerChanges::between(&timers, &after_timers, false),
            after: state_json(&after),
        };
        writeln!(out, "{}", serde_json::to_string(&step)?)?;
        (entries, timers) = (after, after_timers);
        // The watermark trails the highest event time seen by a millisecond (as a source's with
        // no out-of-orderness): the timers it passes fire, as do processing-time timers due.
        if let Some(t) = timestamp {
            watermark = watermark.max(t.saturating_sub(1));
        }
        fire(&mut replay, watermark, &mut entries, &mut timers, &mut out)?;
    }
    // The end of the events is the end of event time: every event-time timer fires.
    fire(&mut replay, i64::MAX, &mut entries, &mut timers, &mut out)?;
    out.flush()?;
    Ok(())
}

/// Fires the timers due at `watermark`; prints a line when any fired or the operator emitted.
fn fire(
    replay: &mut KeyReplay,
    watermark: i64,
    entries: &mut Vec<KeyEntry>,
    timers: &mut Vec<KeyTimer>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let output = replay.advance(watermark).map_err(anyhow::Error::msg)?;
    let (after, after_timers) = replay.state().map_err(anyhow::Error::msg)?;
    if output.is_empty() && after_timers == *timers && after == *entries {
        return Ok(());
    }
    let step = Step {
        event: None,
        value: None,
        timestamp: None,
        watermark: Some(watermark),
        before: None,
        output,
        changes: TimerChanges::between(timers, &after_timers, true),
        after: state_json(&after),
    };
    writeln!(out, "{}", serde_json::to_string(&step)?)?;
    (*entries, *timers) = (after, after_timers);
    Ok(())
}

/// One line of the replay: an event, or time advancing (timers firing), with what changed.
#[derive(serde::Serialize)]
#[serde(rename_all = "kebab-case")]
struct Step<'a> {
    /// The event's number, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
    /// For time advancing: the watermark it advanced to.
    #[serde(skip_serializing_if = "Option::is_none")]
    watermark: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<Value>,
    output: Vec<String>,
    #[serde(flatten)]
    changes: TimerChanges,
    after: Value,
}

/// The timers a step set, and those it fired (time advancing) or deleted (an event).
#[derive(serde::Serialize)]
#[serde(rename_all = "kebab-case")]
struct TimerChanges {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    timers_set: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    timers_fired: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    timers_deleted: Vec<Value>,
}

impl TimerChanges {
    /// The timers pending `after` and not `before` (set), and the other way round (fired when
    /// time advanced, else deleted).
    fn between(before: &[KeyTimer], after: &[KeyTimer], advancing: bool) -> Self {
        let set: Vec<KeyTimer> = after.iter().filter(|t| !before.contains(t)).copied().collect();
        let gone: Vec<KeyTimer> = before.iter().filter(|t| !after.contains(t)).copied().collect();
        let (timers_fired, timers_deleted) =
            if advancing { (timers_json(&gone), Vec::new()) } else { (Vec::new(), timers_json(&gone)) };
        TimerChanges { timers_set: timers_json(&set), timers_fired, timers_deleted }
    }
}

/// The key's state as one JSON object: a value state's value, a map state's entries as an object
/// (map keys as text), a list state's elements as an array; each value as the JSON it is, else as
/// text (or `{"base64": …}`).
fn state_json(entries: &[KeyEntry]) -> Value {
    let mut state = serde_json::Map::new();
    for entry in entries {
        let (json, raw) = value_fields(&entry.value);
        let value = json.or(raw).unwrap_or(Value::Null);
        match &entry.map_key {
            Some(map_key) => {
                let map = state.entry(entry.state.clone()).or_insert_with(|| json!({}));
                // The SDKs store map keys as JSON: a string key shows as itself.
                let key = match serde_json::from_slice::<String>(map_key) {
                    Ok(text) => text,
                    Err(_) => match bytes_json(map_key) {
                        Value::String(text) => text,
                        other => other.to_string(),
                    },
                };
                map[key] = value;
            }
            None if entry.kind == StateKind::List => {
                let list = state.entry(entry.state.clone()).or_insert_with(|| json!([]));
                if let Value::Array(items) = list {
                    items.push(value);
                }
            }
            None => {
                state.insert(entry.state.clone(), value);
            }
        }
    }
    Value::Object(state)
}

/// Timers as JSON: `{"timer":"event-time","time":…}` each.
fn timers_json(timers: &[KeyTimer]) -> Vec<Value> {
    timers.iter().map(|(domain, time)| json!({ "timer": domain, "time": time })).collect()
}

/// The number in field `field` of JSON object `line`, as whole milliseconds.
fn millis(line: &str, field: &str) -> Option<i64> {
    let value: Value = serde_json::from_str(line).ok()?;
    value.get(field)?.as_f64().map(|ms| ms as i64)
}

/// The module, config and sandbox of the operator: from `--module`/`--config`, else from the
/// job file.
fn module_of(args: &ReplayArgs) -> anyhow::Result<(PathBuf, String, crate::wasm::SandboxLimits)> {
    let spec = match &args.job {
        None => None,
        Some(path) => {
            let text = crate::job::read(path)?;
            let spec = crate::job::parse(&text, &format!("job file {}", path.display()))?;
            Some((path.parent().unwrap_or(Path::new(".")).to_path_buf(), spec))
        }
    };
    let op = match &spec {
        None => None,
        Some((_, spec)) => Some(
            spec.operators
                .iter()
                .find(|op| op.uid == args.operator)
                .with_context(|| format!("the job file has no operator '{}'", args.operator))?,
        ),
    };
    let module = match (&args.module, op, &spec) {
        (Some(module), _, _) => module.clone(),
        (None, Some(op), Some((base, _))) => base.join(
            op.module
                .as_ref()
                .with_context(|| format!("operator '{}' is a builtin: replay runs operator modules", args.operator))?,
        ),
        _ => bail!("name the module: --module FILE, or --job JOB (the job file the savepoint was taken of)"),
    };
    let config = match (&args.config, op) {
        (Some(config), _) => {
            let value: Value = serde_json::from_str(config).context("--config is not JSON")?;
            if !value.is_object() {
                bail!("--config must be a JSON object, such as {{\"field\": \"user\"}}");
            }
            value.to_string()
        }
        (None, Some(op)) => serde_json::to_string(&op.config.clone().unwrap_or_default())?,
        (None, None) => "{}".to_string(),
    };
    let limits = match op {
        Some(op) => crate::job::sandbox_limits(op).map_err(anyhow::Error::msg)?,
        None => crate::wasm::SandboxLimits::default(),
    };
    Ok((module, config, limits))
}
