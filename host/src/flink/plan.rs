//! A job file as the Flink runner reads it: the plan, JSON that `WeirFlinkJob` turns into a
//! DataStream job. Everything a TaskManager needs is resolved here, on the machine that submits:
//! paths made absolute, each module loaded (so that a missing or broken one is refused before
//! Flink sees the job) and described, operators in an order that has each after what it reads.
//! What the Flink mode does not run is refused, naming the vertex and what it supports.
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::job::spec::{BackendType, SinkType, SourceType, WatermarksSpec};
use crate::job::{self, Input, JobSpec, check_shape, checkpoint_interval, sandbox_limits};
use crate::wasm::WasmEngine;

/// What the Flink runner supports, for refusals.
const SUPPORTED: &str = "the Flink runner reads `file` and `generator` sources and writes `file`, `stdout` and \
                         `blackhole` sinks; run this job with `weir run` or `weir serve` to use the others";

/// The checkpoint interval when the job file sets none: Flink's file sink publishes its files at
/// checkpoints, so the Flink runner always checkpoints.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);

/// The plan of the job file at `path`, at `parallelism` when given; operators' workers are the
/// `weir` binary at `worker`, savepoints' exports go to `export_dir` (see [`super::savepoints`]).
pub fn plan(
    path: &Path,
    parallelism: Option<u32>,
    engine: &WasmEngine,
    worker: &Path,
    export_dir: &Path,
) -> Result<Value, String> {
    let text = job::read(path).map_err(|e| e.to_string())?;
    let mut spec: JobSpec = job::parse(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
    if let Some(p) = parallelism {
        spec.parallelism = p;
    }
    let dataflow = check_shape(&spec)?;
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base = base.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", base.display()))?;
    let absolute = |what: &str, p: &Option<String>| -> Result<String, String> {
        let p = p.as_deref().ok_or_else(|| format!("{what} has no `path`"))?;
        Ok(base.join(p).display().to_string())
    };
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let watermarks = |what: &str, w: &Option<WatermarksSpec>| -> Result<Value, String> {
        let Some(w) = w else { return Ok(Value::Null) };
        let duration = |key: &str, v: &Option<String>| -> Result<Value, String> {
            v.as_deref()
                .map(|v| {
                    job::spec::duration(v)
                        .map(|d| json!(ms(d)))
                        .ok_or(format!("{what}: {key} \"{v}\" is not a duration"))
                })
                .unwrap_or(Ok(Value::Null))
        };
        Ok(json!({
            "out-of-orderness-ms": duration("out-of-orderness", &w.out_of_orderness)?,
            "idle-timeout-ms": duration("idle-timeout", &w.idle_timeout)?,
        }))
    };

    let mut sources = Vec::new();
    for source in &spec.sources {
        let what = format!("source '{}'", source.uid);
        let mut planned = json!({
            "uid": source.uid,
            "parallelism": source.parallelism.unwrap_or(spec.parallelism),
            "rate": source.rate,
            "watermarks": watermarks(&what, &source.watermarks)?,
        });
        match source.kind {
            SourceType::File => {
                planned["type"] = json!("file");
                planned["path"] = json!(absolute(&what, &source.path)?);
                planned["timestamp-field"] = json!(source.timestamp_field);
            }
            SourceType::Generator => {
                planned["type"] = json!("generator");
                planned["count"] = json!(source.count);
                planned["keys"] = json!(source.keys.unwrap_or(1000));
                let step = source.event_time_step.as_deref().map(|s| {
                    job::spec::duration(s)
                        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                        .ok_or(format!("{what}: event-time-step \"{s}\" is not a duration"))
                });
                planned["event-time-step-ns"] = json!(step.transpose()?);
            }
            SourceType::Kafka => return Err(format!("{what} is a kafka source: {SUPPORTED}")),
        }
        sources.push(planned);
    }

    let inputs = |inputs: &[Input]| -> Value {
        let planned = inputs
            .iter()
            .map(|input| json!({ "from": input.name(), "partitioning": input.partitioning.name() }))
            .collect();
        Value::Array(planned)
    };

    let mut operators = Vec::new();
    for &i in &dataflow.order {
        let op = &spec.operators[i];
        let what = format!("operator '{}'", op.uid);
        let Some(module) = &op.module else {
            return Err(format!("{what} is a builtin operator: the Flink runner runs operator modules only"));
        };
        if op.canary.is_some() {
            return Err(format!(
                "{what} runs a canary, which the Flink runner does not run (docs/flink.md): promote or abort it first"
            ));
        }
        if op.quarantines() {
            return Err(format!(
                "{what} sets failing events aside (`on-error = \"quarantine\"`), which the Flink runner does not do \
                 (docs/quarantine.md): run the job with `weir run` or `weir serve`, or drop `on-error`"
            ));
        }
        let module_path = base.join(module);
        let loaded = engine.load_file(&module_path).map_err(|e| format!("{what}: {e}"))?;
        let contract: u32 = loaded.contract_version().split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0);
        let config = serde_json::to_string(&op.config.clone().unwrap_or_default())
            .map_err(|e| format!("{what}: `config` cannot be passed as JSON: {e}"))?;
        let limits = sandbox_limits(op)?;
        operators.push(json!({
            "uid": op.uid,
            "keyed": op.keyed(),
            "module": module_path.canonicalize().unwrap_or(module_path).display().to_string(),
            "config": config,
            "contract": contract,
            "side-outputs": loaded.description.side_outputs,
            "parallelism": op.parallelism.unwrap_or(spec.parallelism),
            "call-deadline-ms": ms(limits.call_deadline),
            "memory-limit": limits.memory_limit,
            "inputs": inputs(&dataflow.operators[i]),
            "watermarks": watermarks(&what, &op.watermarks)?,
        }));
    }

    let mut sinks = Vec::new();
    for (sink, reads) in spec.sinks.iter().zip(&dataflow.sinks) {
        let what = format!("sink '{}'", sink.uid);
        let mut planned = json!({ "uid": sink.uid, "inputs": inputs(reads) });
        match sink.kind {
            SinkType::File => {
                planned["type"] = json!("file");
                planned["path"] = json!(absolute(&what, &sink.path)?);
            }
            SinkType::Stdout => planned["type"] = json!("stdout"),
            SinkType::Blackhole => planned["type"] = json!("blackhole"),
            SinkType::Postgres | SinkType::Kafka => {
                return Err(format!("{what} is a {} sink: {SUPPORTED}", format!("{:?}", sink.kind).to_lowercase()));
            }
        }
        sinks.push(planned);
    }

    let interval = match &spec.checkpointing {
        Some(c) => checkpoint_interval(c)?,
        None => Duration::ZERO,
    };
    let interval = if interval.is_zero() { DEFAULT_CHECKPOINT_INTERVAL } else { interval };
    Ok(json!({
        "name": spec.name,
        "parallelism": spec.parallelism,
        "max-parallelism": spec.max_parallelism,
        "checkpoint-interval-ms": ms(interval),
        "state-backend": match spec.state.backend { BackendType::Memory => "hashmap", BackendType::Rocksdb => "rocksdb" },
        "incremental": spec.state.incremental.unwrap_or(false),
        "worker": worker.display().to_string(),
        "export-dir": export_dir.display().to_string(),
        "sources": sources,
        "operators": operators,
        "sinks": sinks,
    }))
}
