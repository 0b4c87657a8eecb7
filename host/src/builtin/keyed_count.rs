//! `keyed-count`: the `count` example operator written natively, for the sandbox-cost benchmark.
//! Same state layout (a JSON number in value state 0) and same output lines.
use serde::Serialize;

use crate::key_group::{key_group, key_group_range};
use crate::runtime::{EventBatch, HandedOverState, Operator, OperatorFactory, StateSnapshot, SubtaskInfo};
use crate::state::{Backends, StateBackend, StateDescriptor, StateKind, StateRestore};

/// What it declares: like the `count` example, one value state holding a JSON number.
pub(super) fn states() -> Vec<StateDescriptor> {
    vec![StateDescriptor::new("count", StateKind::Value, 1)]
}

pub(super) struct KeyedCountFactory {
    pub(super) keyed: bool,
    pub(super) restore: Option<StateRestore>,
    pub(super) backends: Backends,
}

impl OperatorFactory for KeyedCountFactory {
    fn create(&self, info: &SubtaskInfo) -> Result<Box<dyn Operator>, String> {
        if !self.keyed {
            return Err("keyed-count keeps keyed state: set input = \"hash\" on it".to_string());
        }
        let range = key_group_range(info.max_parallelism, info.parallelism, info.index);
        let backend = match &self.restore {
            None => self.backends.open(range.clone(), &[StateKind::Value])?,
            Some(restore) => {
                let restore = || {
                    let restored = restore(&self.backends, &[StateKind::Value], range.clone(), info.index)?;
                    // A builtin migrates nothing: this refuses state saved under another layout.
                    restored.migrations(&states())?;
                    Ok::<_, String>(restored.backend)
                };
                restore().map_err(|e| format!("cannot restore its state: {e}"))?
            }
        };
        Ok(Box::new(KeyedCount { backend, key_groups: range, max_parallelism: info.max_parallelism, buf: Vec::new() }))
    }
}

struct KeyedCount {
    backend: Box<dyn StateBackend>,
    key_groups: std::ops::Range<u32>,
    max_parallelism: u32,
    buf: Vec<u8>,
}

#[derive(Serialize)]
struct Output<'a> {
    key: &'a str,
    count: u64,
}

impl Operator for KeyedCount {
    fn process(&mut self, input: &EventBatch, out: &mut EventBatch) -> Result<(), String> {
        for event in input.iter() {
            let key = event.key.ok_or("an event without a key reached a keyed operator")?;
            let kg = key_group(key, self.max_parallelism);
            self.buf.clear();
            let state = |e| format!("state backend: {e}");
            let count = if self.backend.value_get(0, kg, key, &mut self.buf).map_err(state)? {
                serde_json::from_slice::<u64>(&self.buf).map_err(|e| format!("stored count is not a number: {e}"))?
            } else {
                0
            } + 1;
            self.buf.clear();
            serde_json::to_writer(&mut self.buf, &count).map_err(|e| e.to_string())?;
            self.backend.value_put(0, kg, key, &self.buf).map_err(state)?;
            let key_text = String::from_utf8_lossy(key);
            let mut result = Ok(());
            out.push_with(Some(key), event.timestamp, |buf| {
                result = serde_json::to_writer(buf, &Output { key: &key_text, count });
            });
            result.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<StateSnapshot>, String> {
        let body = self.backend.snapshot(self.key_groups.clone(), &states()).map_err(|e| e.to_string())?;
        Ok(Some(StateSnapshot { key_groups: self.key_groups.clone(), body }))
    }

    fn into_state(self: Box<Self>) -> Option<HandedOverState> {
        Some((self.key_groups, self.backend))
    }
}
