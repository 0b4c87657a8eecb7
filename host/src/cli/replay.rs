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
use crate::checkpoint::savepoint::{OperatorCode, SavepointLocation, SavepointMetadata};
use crate::job::spec::SourceType;
use crate::job::{JobSpec, ModuleFiles, Modules};
use crate::runtime::{BATCH_SIZE, Emitted, EventBatch, Interrupt, Operator, OperatorFactory, Position, SubtaskInfo};
use crate::state::Backends;
use crate::state::{StateKind, ttl};
use crate::wasm::WasmEngine;
use crate::wasm::WasmOperatorFactory;
use crate::wasm::replay::{KeyEntry, KeyReplay, KeyTimer};
use crate::wasm::trial::TrialTarget;

/// `weir replay`'s arguments.
#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// The savepoint directory or URL.
    savepoint: String,
    /// The operator whose state and module to replay.
    #[arg(long, value_name = "UID")]
    operator: String,
    /// The key: its state is read from the savepoint, and every event gets it.
    #[arg(long, value_name = "KEY")]
    key: String,
    /// The events, one per line, each the value the operator receives (JSON lines, as a file
    /// source reads them).
    #[arg(long, value_name = "FILE", required_unless_present = "events_from", conflicts_with = "events_from")]
    events: Option<PathBuf>,
    /// Instead of --events: the events of the job's source UID (a file, a Kafka topic up to its
    /// current end, a bounded generator) from where the savepoint left it, through the operators
    /// between it and the operator (stateless ones, such as filters and key_by), those of the
    /// key. Needs --job.
    #[arg(long, value_name = "SOURCE", requires = "job")]
    events_from: Option<String>,
    /// With --events-from a file source: the byte of its file to start at (a line starting there
    /// or after).
    #[arg(long, value_name = "BYTE", requires = "events_from")]
    from_byte: Option<u64>,
    /// With --events-from a file source: the byte to stop at (the lines starting before it).
    #[arg(long, value_name = "BYTE", requires = "events_from")]
    to_byte: Option<u64>,
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
    let job = job_file(args)?;
    let (module_path, config, limits) = module_of(args, job.as_ref())?;
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
    // Processing time starts when the savepoint was taken and moves a millisecond a step.
    let mut now = metadata.taken_at as i64;
    ttl::set_virtual_now(now);
    let mut replay = KeyReplay::open(&target, Arc::new(restore), args.key.as_bytes()).map_err(anyhow::Error::msg)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut entries, mut timers) = replay.state().map_err(anyhow::Error::msg)?;
    writeln!(out, "{}", json!({ "restored": state_json(&entries), "timers": timers_json(&timers) }))?;
    let events = match (&args.events, &args.events_from, &job) {
        (Some(file), _, _) => file_events(file, args.timestamp_field.as_deref())?,
        (None, Some(source), Some((base, spec))) => {
            let modules = ModuleFiles::new(base.clone(), &engine);
            let mut from = Upstream { spec, base, modules, max_parallelism: metadata.max_parallelism };
            let position = from.position(args, source, &metadata)?;
            from.events(source, &args.operator, args.key.as_bytes(), position)?
        }
        _ => bail!("give the events: --events FILE, or --events-from SOURCE with --job"),
    };
    let mut watermark = i64::MIN;
    for (n, (line, timestamp)) in events.into_iter().enumerate() {
        now += 1;
        ttl::set_virtual_now(now);
        let output = replay.process(&line, timestamp).map_err(|e| anyhow::anyhow!("event {}: {e}", n + 1))?;
        let line = String::from_utf8_lossy(&line);
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
fn module_of(
    args: &ReplayArgs,
    spec: Option<&(PathBuf, JobSpec)>,
) -> anyhow::Result<(PathBuf, String, crate::wasm::SandboxLimits)> {
    let op = match spec {
        None => None,
        Some((_, spec)) => Some(
            spec.operators
                .iter()
                .find(|op| op.uid == args.operator)
                .with_context(|| format!("the job file has no operator '{}'", args.operator))?,
        ),
    };
    let module = match (&args.module, op, spec) {
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

/// The job file `--job` names, parsed, with the directory its paths start at.
fn job_file(args: &ReplayArgs) -> anyhow::Result<Option<(PathBuf, JobSpec)>> {
    let Some(path) = &args.job else { return Ok(None) };
    let text = crate::job::read(path)?;
    let spec = crate::job::parse(&text, &format!("job file {}", path.display()))?;
    Ok(Some((path.parent().unwrap_or(Path::new(".")).to_path_buf(), spec)))
}

/// The events of `--events`: each line, with its event time in `timestamp_field`.
fn file_events(file: &Path, timestamp_field: Option<&str>) -> anyhow::Result<Vec<(Vec<u8>, Option<i64>)>> {
    let reader = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut events = Vec::new();
    for (n, line) in std::io::BufReader::new(reader).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let timestamp = match timestamp_field {
            None => None,
            Some(field) => Some(millis(&line, field).with_context(|| {
                format!("line {} of {}: no number of milliseconds in `{field}`", n + 1, file.display())
            })?),
        };
        events.push((line.into_bytes(), timestamp));
    }
    Ok(events)
}

/// The byte ranges of source `uid`'s file to read: --from-byte, else what the savepoint left it
/// to read (all of it when it recorded nothing), each cut at --to-byte.
fn source_ranges(args: &ReplayArgs, uid: &str, metadata: &SavepointMetadata) -> anyhow::Result<Vec<(u64, u64)>> {
    let to = args.to_byte.unwrap_or(u64::MAX);
    let mut ranges = match args.from_byte {
        Some(from) => vec![(from, to)],
        None => {
            let mut ranges = Vec::new();
            for position in metadata.sources.iter().filter(|p| p.uid == uid) {
                ranges.extend(crate::connectors::ranges_left(&position.position, uid).map_err(anyhow::Error::msg)?);
            }
            if ranges.is_empty() { vec![(0, u64::MAX)] } else { ranges }
        }
    };
    ranges.sort_unstable();
    Ok(ranges.into_iter().map(|(from, end)| (from, end.min(to))).filter(|(from, end)| from < end).collect())
}

/// What reads a job's file source through the operators up to the replayed one.
struct Upstream<'a> {
    spec: &'a JobSpec,
    base: &'a Path,
    modules: ModuleFiles<'a>,
    max_parallelism: u32,
}

impl<'a> Upstream<'a> {
    /// The events of key `key` that operator `operator` receives from source `source`, read from
    /// `position` to its end, through the operators between them (which must keep no state:
    /// replay has only the replayed operator's). A Kafka source reads up to the offsets it finds
    /// when it starts.
    fn events(
        &mut self,
        source: &str,
        operator: &str,
        key: &[u8],
        position: Option<Position>,
    ) -> anyhow::Result<Vec<(Vec<u8>, Option<i64>)>> {
        let spec = self.source(source)?;
        let mut bounded = spec.clone();
        bounded.rate = None;
        match bounded.kind {
            SourceType::Kafka => bounded.stop_at = Some("latest".to_string()),
            SourceType::Generator if bounded.count.is_none() => {
                bail!(
                    "source '{source}' generates events without end: give it a `count`, or the events in a file (--events)"
                )
            }
            _ => {}
        }
        let factory = crate::job::source_factory(&bounded, self.base).map_err(anyhow::Error::msg)?;
        let chain = crate::job::chain_from(self.spec, source, operator).map_err(anyhow::Error::msg)?;
        let mut operators = chain.into_iter().map(|i| self.operator(i)).collect::<anyhow::Result<Vec<_>>>()?;
        let mut reader = factory
            .create(&self.subtask(source), position.as_ref())
            .map_err(|e| anyhow::anyhow!("source '{source}': {e}"))?;
        let mut events = Vec::new();
        loop {
            let mut batch = EventBatch::default();
            let more = reader.poll(&mut batch, BATCH_SIZE).map_err(|e| anyhow::anyhow!("source '{source}': {e}"))?;
            for op in &mut operators {
                let mut out = Emitted::default();
                op.process(0, &batch, &mut out).map_err(anyhow::Error::msg)?;
                batch = out.main;
            }
            let theirs = batch.iter().filter(|e| e.key == Some(key));
            events.extend(theirs.map(|e| (e.value.to_vec(), e.timestamp)));
            if !more {
                return Ok(events);
            }
        }
    }

    /// Source `uid` of the job.
    fn source(&self, uid: &str) -> anyhow::Result<&'a crate::job::spec::SourceSpec> {
        self.spec.sources.iter().find(|s| s.uid == uid).with_context(|| format!("the job has no source '{uid}'"))
    }

    /// Where source `uid` starts: --from-byte and --to-byte for a file source, else where the
    /// savepoint left it (its subtasks' positions merged), else its beginning.
    fn position(&self, args: &ReplayArgs, uid: &str, metadata: &SavepointMetadata) -> anyhow::Result<Option<Position>> {
        let spec = self.source(uid)?;
        if spec.kind == SourceType::File {
            return Ok(Some(crate::connectors::file_position(&source_ranges(args, uid, metadata)?)));
        }
        if args.from_byte.is_some() || args.to_byte.is_some() {
            bail!("--from-byte and --to-byte are for file sources; source '{uid}' starts where the savepoint left it");
        }
        let recorded: Vec<Position> =
            metadata.sources.iter().filter(|p| p.uid == uid).map(|p| p.position.clone()).collect();
        if recorded.is_empty() {
            return Ok(None);
        }
        let factory = crate::job::source_factory(spec, self.base).map_err(anyhow::Error::msg)?;
        Ok(Some(factory.merge_positions(uid, &recorded).map_err(anyhow::Error::msg)?))
    }

    /// The one subtask replay opens of vertex `uid`.
    fn subtask(&self, uid: &str) -> SubtaskInfo {
        SubtaskInfo {
            uid: Arc::from(uid),
            index: 0,
            parallelism: 1,
            max_parallelism: self.max_parallelism,
            attempt: 0,
            interrupt: Interrupt::default(),
        }
    }

    /// Operator `index` of the job, opened as one subtask owning every key group.
    fn operator(&mut self, index: usize) -> anyhow::Result<Box<dyn Operator>> {
        let op = &self.spec.operators[index];
        let Some(module) = &op.module else {
            bail!("operator '{}' is a builtin: replay runs the operators before the replayed one from modules", op.uid);
        };
        let module = self.modules.resolve(module).map_err(|e| anyhow::anyhow!("operator '{}': {e}", op.uid))?;
        if !module.description.states.is_empty() {
            bail!(
                "operator '{}' keeps state, which replay does not have: give the events the replayed operator \
                 receives in a file (--events)",
                op.uid
            );
        }
        let config = serde_json::to_string(&op.config.clone().unwrap_or_default())?;
        let limits = crate::job::sandbox_limits(op).map_err(anyhow::Error::msg)?;
        let factory = WasmOperatorFactory::new(module, config, op.keyed(), limits, Backends::Memory);
        factory.create(&self.subtask(&op.uid)).map_err(|e| anyhow::anyhow!("operator '{}': {e}", op.uid))
    }
}
