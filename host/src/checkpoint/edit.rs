//! Savepoint writing (`weir savepoint write`, the write side of Flink's State Processor API): a
//! new canonical savepoint made from an existing one (never changed) or from nothing, by
//! operations on its state: set a key's state, delete keys, drop or rename an operator or one of
//! its states, bootstrap an operator's state from lines of `{"key": …, "<state>": …}`.
//!
//! The whole state is loaded into memory (a savepoint worth editing offline fits there), edited,
//! and written as one state file per operator covering every key group, so that it restores at
//! any parallelism. What an operator's state may hold is what its declaration says: the state's
//! name and kind (a value, a map's entries as a JSON object, a list as a JSON array) and, for the
//! SDKs' states, JSON values. The contract declares no value types: a value of the wrong JSON type
//! for the operator's code is found when the operator reads it (`weir replay` shows it first).
use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::Restore;
use super::savepoint::{
    OperatorCode, SavepointFormat, SavepointLocation, SavepointMetadata, SavepointOperator, WrittenOperator,
    WrittenSavepoint,
};
use crate::key_group::key_group;
use crate::runtime::SourcePosition;
use crate::state::broadcast::SavedBroadcast;
use crate::state::{Backends, MemoryBackend, StateBackend, StateDescriptor, StateEntry, StateKind, TIMERS_STATE, ttl};

/// One operation on a savepoint's state, as a line of `--ops` gives it (`{"op": "set", …}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
#[allow(missing_docs)] // each variant's doc says what its fields are
pub enum EditOp {
    /// Sets state `state` of `key`: a value state's value; a map state's entry `map-key`, or
    /// without one all its entries (a JSON object); a list state's elements (a JSON array). A
    /// null value clears it.
    Set {
        operator: String,
        key: String,
        state: String,
        #[serde(rename = "map-key", default)]
        map_key: Option<Value>,
        value: Value,
    },
    /// Deletes every state of `key`, or of every key starting with `prefix` (timers included).
    Delete { operator: String, key: Option<String>, prefix: Option<String> },
    /// Sets the state of each key a file of JSON lines `{"key": …, "<state>": <value>, …}` names.
    Bootstrap { operator: String, file: String },
    /// Drops one state of the operator.
    DropState { operator: String, state: String },
    /// Renames one state of the operator.
    RenameState { operator: String, state: String, to: String },
    /// Drops the operator and its state.
    DropOperator { operator: String },
    /// Gives the operator's state to the operator of uid `to`.
    RenameOperator { operator: String, to: String },
}

/// An operator of the savepoint being written.
struct Edited {
    operator: SavepointOperator,
    /// Its keyed state, over every key group, if it has any states.
    backend: Option<Box<dyn StateBackend>>,
    broadcast: Option<SavedBroadcast>,
}

/// A savepoint being written.
pub struct SavepointEditor {
    job: String,
    savepoint_id: u64,
    max_parallelism: u32,
    sources: Vec<SourcePosition>,
    operators: Vec<Edited>,
    /// Operators a job file declares, for state written to one the savepoint lacks.
    declared: Vec<SavepointOperator>,
}

impl SavepointEditor {
    /// A savepoint of job `job` with `max_parallelism` key groups and no state yet.
    pub fn empty(job: &str, max_parallelism: u32) -> Self {
        SavepointEditor {
            job: job.to_string(),
            savepoint_id: 0,
            max_parallelism,
            sources: Vec::new(),
            operators: Vec::new(),
            declared: Vec::new(),
        }
    }

    /// The state of the canonical savepoint at `location` (relative to `base`), loaded whole.
    pub fn from_savepoint(location: &str, base: &Path) -> Result<Self, String> {
        let at = SavepointLocation::parse(location, base)?;
        let metadata: SavepointMetadata = at.metadata()?;
        if metadata.state_format != SavepointFormat::Canonical {
            return Err(format!(
                "{location} is a native savepoint (a RocksDB job's files): write from a canonical one \
                 (`weir savepoint JOB --format canonical`)"
            ));
        }
        if let Some(op) = metadata.operators.iter().find(|op| op.canary.is_some()) {
            return Err(format!(
                "operator '{}' ran a canary when {location} was taken: write from a savepoint taken after the \
                 canary was promoted or aborted",
                op.uid
            ));
        }
        let restore = Restore::savepoint(location, base)?;
        let max = metadata.max_parallelism;
        let mut operators = Vec::new();
        for op in &metadata.operators {
            let broadcast = op.files.iter().find_map(|f| f.broadcast.clone());
            let backend = match op.states.is_empty() {
                true => None,
                false => {
                    let kinds: Vec<StateKind> = op.states.iter().map(|s| s.kind).collect();
                    let restored = restore.restore_state(&op.uid, &op.states, &Backends::Memory, &kinds, 0..max)?;
                    Some(restored.backend)
                }
            };
            let operator = SavepointOperator { files: Vec::new(), ..op.clone() };
            operators.push(Edited { operator, backend, broadcast });
        }
        Ok(SavepointEditor {
            job: metadata.job,
            savepoint_id: metadata.savepoint_id,
            max_parallelism: max,
            sources: metadata.sources,
            operators,
            declared: Vec::new(),
        })
    }

    /// Declares operator `uid` of a job file: its code, parallelism and states, for state written
    /// to it when the savepoint has none of its own.
    pub fn declare(&mut self, uid: &str, module: OperatorCode, parallelism: u32, states: Vec<StateDescriptor>) {
        let files = Vec::new();
        self.declared.push(SavepointOperator {
            uid: uid.to_string(),
            parallelism,
            module,
            states,
            files,
            canary: None,
        });
    }

    /// The job the savepoint is of.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// Applies `op`; relative files are read from `base`.
    pub fn apply(&mut self, op: EditOp, base: &Path) -> Result<(), String> {
        match op {
            EditOp::Set { operator, key, state, map_key, value } => {
                let max = self.max_parallelism;
                let op = self.operator(&operator)?;
                set(op, max, &key, &state, map_key.as_ref(), &value)
                    .map_err(|e| format!("operator '{operator}', key '{key}': {e}"))
            }
            EditOp::Delete { operator, key, prefix } => {
                let max = self.max_parallelism;
                let op = self.operator(&operator)?;
                let keys = match (key, prefix) {
                    (Some(key), None) => vec![key.into_bytes()],
                    (None, Some(prefix)) => keys_with_prefix(op, max, prefix.as_bytes())?,
                    _ => return Err("a delete names `key` or `prefix`, one of them".to_string()),
                };
                let Some(backend) = op.backend.as_mut() else { return Ok(()) };
                for key in keys {
                    let kg = key_group(&key, max);
                    for state in 0..op.operator.states.len() as u32 {
                        backend.clear(state, kg, &key).map_err(|e| e.to_string())?;
                    }
                }
                Ok(())
            }
            EditOp::Bootstrap { operator, file } => self.bootstrap(&operator, &base.join(file)),
            EditOp::DropState { operator, state } => {
                let max = self.max_parallelism;
                let op = self.operator(&operator)?;
                let index = state_index(op, &state)?;
                let mut states = op.operator.states.clone();
                states.remove(index);
                let kinds: Vec<StateKind> = states.iter().map(|s| s.kind).collect();
                let mut rebuilt = MemoryBackend::new(0..max, &kinds);
                if let Some(backend) = &op.backend {
                    let mut failed = None;
                    backend
                        .scan(0..max, &mut |entry| {
                            let moved = match entry.state as usize {
                                s if s == index => return,
                                s if s > index => StateEntry { state: entry.state - 1, ..entry },
                                _ => entry,
                            };
                            if let Err(e) = rebuilt.insert(moved) {
                                failed.get_or_insert(e.to_string());
                            }
                        })
                        .map_err(|e| e.to_string())?;
                    failed.map_or(Ok(()), Err)?;
                }
                op.operator.states = states;
                op.backend = (!op.operator.states.is_empty()).then(|| Box::new(rebuilt) as Box<dyn StateBackend>);
                Ok(())
            }
            EditOp::RenameState { operator, state, to } => {
                let op = self.operator(&operator)?;
                if op.operator.states.iter().any(|s| s.name == to) {
                    return Err(format!("operator '{operator}' already has a state '{to}'"));
                }
                let index = state_index(op, &state)?;
                op.operator.states[index].name = to;
                Ok(())
            }
            EditOp::DropOperator { operator } => {
                let before = self.operators.len();
                self.operators.retain(|op| op.operator.uid != operator);
                match self.operators.len() < before {
                    true => Ok(()),
                    false => Err(self.unknown(&operator)),
                }
            }
            EditOp::RenameOperator { operator, to } => {
                if self.operators.iter().any(|op| op.operator.uid == to) {
                    return Err(format!("the savepoint already has an operator '{to}': drop it first"));
                }
                let unknown = self.unknown(&operator);
                let op = self.operators.iter_mut().find(|op| op.operator.uid == operator).ok_or(unknown)?;
                op.operator.uid = to;
                Ok(())
            }
        }
    }

    /// Sets the state of every key of the JSON lines of `file`.
    fn bootstrap(&mut self, operator: &str, file: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let max = self.max_parallelism;
        let op = self.operator(operator)?;
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let at = || format!("{} line {}", file.display(), n + 1);
            let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else {
                return Err(format!("{}: not a JSON object such as {{\"key\": \"alice\", \"count\": 7}}", at()));
            };
            let Some(Value::String(key)) = fields.get("key") else {
                return Err(format!("{}: no `key` (a string)", at()));
            };
            for (state, value) in fields.iter().filter(|(name, _)| *name != "key") {
                set(op, max, key, state, None, value)
                    .map_err(|e| format!("{}: operator '{operator}', key '{key}': {e}", at()))?;
            }
        }
        Ok(())
    }

    /// Operator `uid` of the savepoint, or the job file's when the savepoint has no such
    /// operator (it joins the savepoint).
    fn operator(&mut self, uid: &str) -> Result<&mut Edited, String> {
        if let Some(i) = self.operators.iter().position(|op| op.operator.uid == uid) {
            return Ok(&mut self.operators[i]);
        }
        let declared = self.declared.iter().find(|op| op.uid == uid).cloned().ok_or_else(|| self.unknown(uid))?;
        let kinds: Vec<StateKind> = declared.states.iter().map(|s| s.kind).collect();
        let backend = (!kinds.is_empty())
            .then(|| Box::new(MemoryBackend::new(0..self.max_parallelism, &kinds)) as Box<dyn StateBackend>);
        self.operators.push(Edited { operator: declared, backend, broadcast: None });
        Ok(self.operators.last_mut().expect("just pushed"))
    }

    /// The error for an operator neither the savepoint nor the job file has.
    fn unknown(&self, uid: &str) -> String {
        let known: BTreeSet<&str> = self.operators.iter().map(|op| op.operator.uid.as_str()).collect();
        let known =
            if known.is_empty() { "none".to_string() } else { known.into_iter().collect::<Vec<_>>().join(", ") };
        format!(
            "there is no operator '{uid}' (the savepoint has: {known}); for an operator it lacks, give the job file \
             with --job"
        )
    }

    /// Writes the savepoint at `location` (relative to `base`), which must not hold one yet, as
    /// one of a job of id `job_id`: a new id, so that a job restored from it treats what the
    /// source job's sinks committed as another job's (left where it is). Restored, its job starts
    /// the sources it has no position for from their beginning.
    pub fn write(self, location: &str, base: &Path, job_id: String) -> Result<SavepointMetadata, String> {
        let at = SavepointLocation::parse(location, base)?;
        if at.metadata().is_ok() || Path::new(location).read_dir().is_ok_and(|mut d| d.next().is_some()) {
            return Err(format!("{location} is not empty: write a new savepoint into a new directory"));
        }
        let operators = self
            .operators
            .into_iter()
            .map(|op| WrittenOperator { operator: op.operator, keyed: op.backend, broadcast: op.broadcast })
            .collect();
        let written = WrittenSavepoint {
            job_id,
            job: self.job,
            savepoint_id: self.savepoint_id,
            max_parallelism: self.max_parallelism,
            sources: self.sources,
            operators,
        };
        super::savepoint::write(&at, written)
    }
}

/// The index of state `name` of `op`.
fn state_index(op: &Edited, name: &str) -> Result<usize, String> {
    op.operator.states.iter().position(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = op.operator.states.iter().map(|s| s.name.as_str()).collect();
        format!("operator '{}' has no state '{name}' (it has: {})", op.operator.uid, names.join(", "))
    })
}

/// The keys of `op`'s state that start with `prefix`.
fn keys_with_prefix(op: &Edited, max: u32, prefix: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut keys = BTreeSet::new();
    if let Some(backend) = &op.backend {
        backend
            .scan(0..max, &mut |entry| {
                if entry.key.starts_with(prefix) {
                    keys.insert(entry.key.to_vec());
                }
            })
            .map_err(|e| e.to_string())?;
    }
    Ok(keys.into_iter().collect())
}

/// Sets state `name` of `key` in `op` to `value` (see [`EditOp::Set`]), refusing what the
/// state's declaration would not read.
fn set(op: &mut Edited, max: u32, key: &str, name: &str, map_key: Option<&Value>, value: &Value) -> Result<(), String> {
    let index = state_index(op, name)?;
    let descriptor = &op.operator.states[index];
    if descriptor.name == TIMERS_STATE {
        return Err("timers are the operator's to set".to_string());
    }
    let (kind, time_to_live, state) = (descriptor.kind, descriptor.time_to_live, index as u32);
    let backend = op.backend.as_mut().ok_or("the operator has no keyed state")?;
    let (kg, key) = (key_group(key.as_bytes(), max), key.as_bytes());
    let json = |v: &Value| serde_json::to_vec(v).map_err(|e| e.to_string());
    // What is stored: with its expiry when the state has a time-to-live (counted from now).
    let stored = |v: &Value| -> Result<Vec<u8>, String> {
        let bytes = json(v)?;
        Ok(match time_to_live {
            Some(ttl_ms) => {
                let mut out = Vec::new();
                ttl::wrap(ttl_ms, ttl::now_ms(), &bytes, &mut out);
                out
            }
            None => bytes,
        })
    };
    let failed = |e: crate::state::StateError| e.to_string();
    match (kind, map_key, value) {
        (_, None, Value::Null) => backend.clear(state, kg, key).map_err(failed),
        (StateKind::Value, None, value) => backend.value_put(state, kg, key, &stored(value)?).map_err(failed),
        (StateKind::Value, Some(_), _) => Err(format!("state '{name}' is a value state: it has no map keys")),
        (StateKind::Map, Some(map_key), Value::Null) => {
            backend.map_remove(state, kg, key, &json(map_key)?).map_err(failed)
        }
        (StateKind::Map, Some(map_key), value) => {
            backend.map_put(state, kg, key, &json(map_key)?, &stored(value)?).map_err(failed)
        }
        (StateKind::Map, None, Value::Object(entries)) => {
            backend.clear(state, kg, key).map_err(failed)?;
            for (map_key, value) in entries {
                let map_key = json(&Value::String(map_key.clone()))?;
                backend.map_put(state, kg, key, &map_key, &stored(value)?).map_err(failed)?;
            }
            Ok(())
        }
        (StateKind::Map, None, other) => Err(format!(
            "state '{name}' is a map state: give its entries as a JSON object (or one entry with `map-key`), not {other}"
        )),
        (StateKind::List, None, Value::Array(items)) => {
            backend.clear(state, kg, key).map_err(failed)?;
            items.iter().try_for_each(|item| backend.list_append(state, kg, key, &stored(item)?).map_err(failed))
        }
        (StateKind::List, _, other) => {
            Err(format!("state '{name}' is a list state: give its elements as a JSON array, not {other}"))
        }
        (StateKind::Broadcast, _, _) => Err(format!("state '{name}' is broadcast state, which no key holds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateItem;

    fn editor() -> SavepointEditor {
        let mut editor = SavepointEditor::empty("job", 8);
        let states = vec![
            StateDescriptor::new("count", StateKind::Value, 1),
            StateDescriptor::new("pages", StateKind::Map, 1),
            StateDescriptor::new("seen", StateKind::List, 1),
        ];
        let code = OperatorCode::Builtin { builtin: "test".into() };
        editor.declare("count", code, 1, states);
        editor
    }

    fn op(line: &str) -> EditOp {
        serde_json::from_str(line).unwrap()
    }

    fn entries(editor: &SavepointEditor) -> Vec<String> {
        let mut lines = Vec::new();
        let backend = editor.operators[0].backend.as_ref().unwrap();
        backend
            .scan(0..8, &mut |e| {
                let item = match e.item {
                    StateItem::Value(v) | StateItem::ListElement(v) => String::from_utf8_lossy(v).to_string(),
                    StateItem::MapEntry(k, v) => {
                        format!("{}={}", String::from_utf8_lossy(k), String::from_utf8_lossy(v))
                    }
                };
                lines.push(format!("{} {} {item}", String::from_utf8_lossy(e.key), e.state));
            })
            .unwrap();
        lines.sort();
        lines
    }

    #[test]
    fn sets_deletes_and_refuses_by_the_states_kind() {
        let mut editor = editor();
        let base = Path::new(".");
        editor.apply(op(r#"{"op":"set","operator":"count","key":"alice","state":"count","value":7}"#), base).unwrap();
        editor
            .apply(op(r#"{"op":"set","operator":"count","key":"alice","state":"pages","value":{"/a":2}}"#), base)
            .unwrap();
        editor
            .apply(op(r#"{"op":"set","operator":"count","key":"alan","state":"seen","value":["/a","/b"]}"#), base)
            .unwrap();
        assert_eq!(entries(&editor), ["alan 2 \"/a\"", "alan 2 \"/b\"", "alice 0 7", "alice 1 \"/a\"=2"]);
        let refused =
            editor.apply(op(r#"{"op":"set","operator":"count","key":"bob","state":"pages","value":7}"#), base);
        assert!(refused.unwrap_err().starts_with("operator 'count', key 'bob': state 'pages' is a map state"));
        let refused =
            editor.apply(op(r#"{"op":"set","operator":"count","key":"bob","state":"views","value":7}"#), base);
        assert!(
            refused
                .unwrap_err()
                .contains("key 'bob': operator 'count' has no state 'views' (it has: count, pages, seen)")
        );
        editor.apply(op(r#"{"op":"delete","operator":"count","prefix":"al"}"#), base).unwrap();
        assert!(entries(&editor).is_empty());
        assert!(
            serde_json::from_str::<EditOp>(r#"{"op":"set","operator":"c","key":"k","state":"s","value":1,"x":2}"#)
                .is_err()
        );
    }

    #[test]
    fn drops_and_renames_states_keeping_the_others() {
        let mut editor = editor();
        let base = Path::new(".");
        editor.apply(op(r#"{"op":"set","operator":"count","key":"alice","state":"count","value":7}"#), base).unwrap();
        editor
            .apply(op(r#"{"op":"set","operator":"count","key":"alice","state":"seen","value":["/a"]}"#), base)
            .unwrap();
        editor.apply(op(r#"{"op":"drop-state","operator":"count","state":"pages"}"#), base).unwrap();
        editor.apply(op(r#"{"op":"rename-state","operator":"count","state":"seen","to":"visited"}"#), base).unwrap();
        assert_eq!(entries(&editor), ["alice 0 7", "alice 1 \"/a\""]);
        let names: Vec<&str> = editor.operators[0].operator.states.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["count", "visited"]);
    }
}
