//! State moving between weir's runtime and Flink, both ways, through weir's canonical savepoints.
//!
//! weir → Flink: `weir flink run --from-savepoint` of a weir savepoint restores each operator's
//! keyed state (and timers) into a *state exchange file* per operator and the sources' positions
//! into the plan; the job starts on Flink without a Flink savepoint, and each Wasm operator subtask
//! loads the keys Flink assigns to it before its first event (`WasmOperator.open`) and every
//! subtask the operator's broadcast state (`<uid>.broadcast.json`), each source subtask its share
//! of the positions. From its first checkpoint on, the state is Flink's.
//!
//! Flink → weir: while `weir flink savepoint` or `stop` runs, the runner's subtasks write what the
//! savepoint holds into an export directory (each Wasm operator subtask its keys at the
//! savepoint's barrier, subtask 0 its broadcast state, each source subtask its position); the
//! verb then writes a weir canonical savepoint from them into the Flink savepoint's directory, as
//! `weir/`, which `weir run --from-savepoint` restores.
//!
//! A state exchange file: magic `WEIRXCH1`, then entries to its end, each a `u8` item, the key as
//! `bytes`, then per item: 0 value (`u32` state, `bytes` value), 1 map entry (`u32` state, `bytes`
//! map key, `bytes` value), 2 list element (`u32` state, `bytes` value), 3 timer (`u8` domain, 0
//! event time or 1 processing time, `i64` time). `state` indexes the module's declared states;
//! values are the operator's bytes (a time-to-live's expiry is not carried: each engine starts
//! it anew).
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use weir_frame::{Reader, TimeDomain, put_bytes, put_u32};

use crate::checkpoint::Restore;
use crate::checkpoint::savepoint::{
    self, OperatorCode, SavepointLocation, SavepointOperator, WrittenOperator, WrittenSavepoint,
};
use crate::key_group::key_group;
use crate::runtime::{Position, SourcePosition};
use crate::state::{
    Backends, MemoryBackend, StateBackend, StateDescriptor, StateItem, StateKind, TIMERS_STATE, parse_timer_map_key,
    timer_map_key, ttl,
};
use crate::wasm::{OperatorModule, WasmEngine};

const MAGIC: &[u8; 8] = b"WEIRXCH1";

/// The module an operator of the plan runs, and the states its subtasks keep (its declared
/// ones, then the timers when it is keyed and can set them).
pub(super) fn module_of(op: &Value, engine: &WasmEngine) -> Result<(OperatorModule, Vec<StateDescriptor>), String> {
    let path = op["module"].as_str().unwrap_or_default();
    let module = engine.load_file(Path::new(path)).map_err(|e| e.to_string())?;
    let states = module.states(op["keyed"].as_bool().unwrap_or(false));
    Ok((module, states))
}

/// What savepoints record of the code a module is.
pub(super) fn code_of(module: &OperatorModule) -> OperatorCode {
    OperatorCode::Module {
        sha256: module.sha256.clone(),
        name: module.description.name.clone(),
        version: module.description.version.clone(),
    }
}

/// Loads the weir savepoint at `location` into `plan`: a state exchange file in `dir` for each
/// operator with state, named by the operator's `bootstrap`, and each source's positions as its
/// `bootstrap`.
pub fn bootstrap(
    location: &str,
    plan: &mut Value,
    engine: &WasmEngine,
    dir: &Path,
    allow_non_restored_state: bool,
) -> Result<(), String> {
    let restore = Restore::savepoint(location, Path::new("."))?;
    let known: Vec<String> = plan["operators"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["uid"].as_str())
        .map(str::to_string)
        .collect();
    if !allow_non_restored_state
        && let Some(uid) = restore.operator_uids().into_iter().find(|uid| {
            !known.iter().any(|k| k == uid) && restore.saved_operator(uid).is_some_and(|op| !op.files.is_empty())
        })
    {
        return Err(format!(
            "{location} holds state of operator '{uid}', which this job does not have; pass \
             --allow-non-restored-state to start without it"
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let max_parallelism = restore.max_parallelism();
    for op in plan["operators"].as_array_mut().into_iter().flatten() {
        let uid = op["uid"].as_str().unwrap_or_default().to_string();
        let Some(saved) = restore.saved_operator(&uid).filter(|s| !s.files.is_empty()) else { continue };
        let (_, states) = module_of(op, engine).map_err(|e| format!("operator '{uid}': {e}"))?;
        for state in &saved.states {
            if let Some(declared) = states.iter().find(|d| d.name == state.name)
                && declared.schema_version != state.schema_version
            {
                return Err(format!(
                    "operator '{uid}': {location} holds state '{}' at schema version {}, its module declares \
                     version {}; the Flink runner does not migrate state on the way: start with the module the \
                     savepoint was taken with, or upgrade the job with `weir upgrade` first",
                    state.name, state.schema_version, declared.schema_version
                ));
            }
        }
        let kinds: Vec<StateKind> = states.iter().map(|s| s.kind).collect();
        let restored = restore.restore_state(&uid, &states, &Backends::Memory, &kinds, 0..max_parallelism)?;
        if let Some(broadcast) = &restored.broadcast {
            let file = dir.join(format!("{uid}.broadcast.json"));
            let json = serde_json::to_vec(broadcast).map_err(|e| e.to_string())?;
            std::fs::write(&file, json).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            op["bootstrap-broadcast"] = json!(file.display().to_string());
        }
        let mut out = MAGIC.to_vec();
        let mut failed = None;
        restored
            .backend
            .scan(0..max_parallelism, &mut |entry| {
                let Some(state) = states.get(entry.state as usize) else { return };
                let value = |v: &[u8]| -> Vec<u8> {
                    match state.time_to_live {
                        Some(_) => v.get(ttl::EXPIRY_BYTES..).unwrap_or_default().to_vec(),
                        None => v.to_vec(),
                    }
                };
                match entry.item {
                    StateItem::MapEntry(map_key, _) if state.name == TIMERS_STATE => match parse_timer_map_key(map_key)
                    {
                        Some((domain, time)) => {
                            out.push(3);
                            put_bytes(&mut out, entry.key);
                            out.push(domain as u8);
                            out.extend_from_slice(&time.to_le_bytes());
                        }
                        None => failed = Some("a stored timer is malformed".to_string()),
                    },
                    StateItem::Value(v) => {
                        out.push(0);
                        put_bytes(&mut out, entry.key);
                        put_u32(&mut out, entry.state);
                        put_bytes(&mut out, &value(v));
                    }
                    StateItem::MapEntry(map_key, v) => {
                        out.push(1);
                        put_bytes(&mut out, entry.key);
                        put_u32(&mut out, entry.state);
                        put_bytes(&mut out, map_key);
                        put_bytes(&mut out, &value(v));
                    }
                    StateItem::ListElement(v) => {
                        out.push(2);
                        put_bytes(&mut out, entry.key);
                        put_u32(&mut out, entry.state);
                        put_bytes(&mut out, &value(v));
                    }
                }
            })
            .map_err(|e| format!("operator '{uid}': {e}"))?;
        if let Some(problem) = failed {
            return Err(format!("operator '{uid}' in {location}: {problem}"));
        }
        let file = dir.join(format!("{uid}.state"));
        std::fs::write(&file, out).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        op["bootstrap"] = json!(file.display().to_string());
    }
    for source in plan["sources"].as_array_mut().into_iter().flatten() {
        let uid = source["uid"].as_str().unwrap_or_default().to_string();
        let positions: Vec<&SourcePosition> = restore.positions().iter().filter(|p| p.uid == uid).collect();
        if positions.is_empty() {
            continue;
        }
        let mut parts: Vec<[i64; 2]> = Vec::new();
        for position in positions {
            let saved: Value = position.position.read_json(&uid, "a file or generator source's")?;
            match source["type"].as_str() {
                Some("file") => parts.extend(
                    saved["ranges"].as_array().into_iter().flatten().map(|r| [as_i64(&r["from"]), as_i64(&r["to"])]),
                ),
                _ => {
                    // A generator's indices left: single ones pending, then a progression.
                    parts.extend(saved["pending"].as_array().into_iter().flatten().map(|i| [as_i64(i), i64::MAX]));
                    parts.push([as_i64(&saved["next"]), as_i64(&saved["step"])]);
                }
            }
        }
        source["bootstrap"] = json!(parts);
    }
    Ok(())
}

/// A JSON number as an `i64`, a `u64` beyond it as `i64::MAX` (a file range "to the end").
fn as_i64(v: &Value) -> i64 {
    v.as_i64().unwrap_or(if v.as_u64().is_some() { i64::MAX } else { 0 })
}

/// Writes the weir savepoint of what the runner's subtasks exported into `export` at checkpoint
/// `checkpoint_id` of Flink job `job_id`, of the job `plan` describes, into `at`; its location.
pub fn weir_savepoint(
    export: &Path,
    plan: &Value,
    engine: &WasmEngine,
    (job_id, checkpoint_id): (&str, u64),
    at: &Path,
) -> Result<String, String> {
    let max_parallelism = plan["max-parallelism"].as_u64().unwrap_or(128) as u32;
    let mut operators = Vec::new();
    for op in plan["operators"].as_array().into_iter().flatten() {
        let uid = op["uid"].as_str().unwrap_or_default();
        let (module, states) = module_of(op, engine).map_err(|e| format!("operator '{uid}': {e}"))?;
        let code = code_of(&module);
        let parallelism = op["parallelism"].as_u64().unwrap_or(1) as u32;
        let operator = SavepointOperator {
            uid: uid.to_string(),
            parallelism,
            module: code,
            states: states.clone(),
            files: Vec::new(),
            canary: None,
        };
        // Subtask 0's copy of the broadcast state stands for every subtask's.
        let broadcast = match exported(export, &format!("{uid}.broadcast"), ".json")?.first() {
            Some(file) => {
                let text = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", file.display()))?
            }
            None => None,
        };
        let files = exported(export, &format!("{uid}-"), ".state")?;
        if files.is_empty() {
            operators.push(WrittenOperator { operator, keyed: None, broadcast });
            continue;
        }
        let kinds: Vec<StateKind> = states.iter().map(|s| s.kind).collect();
        let mut backend = MemoryBackend::new(0..max_parallelism, &kinds);
        let timers = states.iter().position(|s| s.name == TIMERS_STATE).map(|i| i as u32);
        for file in files {
            let bytes = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            load_exchange(&bytes, &states, timers, max_parallelism, &mut backend)
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        operators.push(WrittenOperator {
            operator,
            keyed: Some(Box::new(backend) as Box<dyn StateBackend>),
            broadcast,
        });
    }
    let mut sources = Vec::new();
    for source in plan["sources"].as_array().into_iter().flatten() {
        let uid = source["uid"].as_str().unwrap_or_default();
        let mut subtask = 0;
        for file in exported(export, &format!("source-{uid}-"), ".json")? {
            let text = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let parts: Vec<[i64; 2]> = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            for [a, b] in parts {
                let position = match source["type"].as_str() {
                    Some("file") => json!({ "ranges": [{ "from": a, "to": b }] }),
                    _ => json!({ "pending": [], "next": a, "step": b }),
                };
                sources.push(SourcePosition { uid: uid.to_string(), subtask, position: Position::json(&position) });
                subtask += 1;
            }
        }
    }
    let location = SavepointLocation::parse(&at.display().to_string(), Path::new("."))?;
    let written = WrittenSavepoint {
        job: plan["name"].as_str().unwrap_or_default().to_string(),
        job_id: job_id.to_string(),
        savepoint_id: checkpoint_id,
        max_parallelism,
        sources,
        operators,
    };
    savepoint::write(&location, written)?;
    Ok(at.display().to_string())
}

/// The files in `dir` named `<prefix>…<suffix>`, sorted.
fn exported(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("the runner exported nothing at {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Inserts a state exchange file's entries into `backend`, in weir's key groups.
fn load_exchange(
    bytes: &[u8],
    states: &[StateDescriptor],
    timers: Option<u32>,
    max_parallelism: u32,
    backend: &mut MemoryBackend,
) -> Result<(), String> {
    let body = bytes.strip_prefix(MAGIC.as_slice()).ok_or("not a state exchange file")?;
    let mut reader = Reader::new(body);
    let truncated = |_| "the file is truncated".to_string();
    let now = ttl::now_ms();
    let mut stored = Vec::new();
    while !reader.is_at_end() {
        let item = reader.u8().map_err(truncated)?;
        let key = reader.bytes().map_err(truncated)?;
        let kg = key_group(key, max_parallelism);
        let failed = |e: crate::state::StateError| e.to_string();
        if item == 3 {
            let domain = TimeDomain::from_byte(reader.u8().map_err(truncated)?).ok_or("a timer of no time domain")?;
            let time = reader.i64().map_err(truncated)?;
            let timers = timers.ok_or("timers of an operator that cannot set them")?;
            backend.map_put(timers, kg, key, &timer_map_key(domain, time), &[]).map_err(failed)?;
            continue;
        }
        let state = reader.u32().map_err(truncated)?;
        let declared = states.get(state as usize).ok_or(format!("state #{state} is not declared"))?;
        let map_key = if item == 1 { Some(reader.bytes().map_err(truncated)?) } else { None };
        let value = reader.bytes().map_err(truncated)?;
        let value = match declared.time_to_live {
            Some(time_to_live) => {
                ttl::wrap(time_to_live, now, value, &mut stored);
                stored.as_slice()
            }
            None => value,
        };
        match (item, map_key) {
            (0, _) => backend.value_put(state, kg, key, value),
            (1, Some(map_key)) => backend.map_put(state, kg, key, map_key, value),
            (2, _) => backend.list_append(state, kg, key, value),
            _ => return Err(format!("unknown entry item {item}")),
        }
        .map_err(failed)?;
    }
    Ok(())
}
