//! `keyed-count`: the `count` example operator written natively, for the sandbox-cost benchmark.
//! Same state layout (a JSON number in value state 0) and same output lines.
use serde::Serialize;

use crate::key_group::{KeyGroup, key_group, key_group_range};
use crate::runtime::{Emitted, EventBatch, HandedOverState, Operator, OperatorFactory, StateSnapshot, SubtaskInfo};
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
        let max_parallelism = info.max_parallelism;
        Ok(Box::new(KeyedCount { backend, key_groups: range, max_parallelism, buf: Vec::new(), kgs: Vec::new() }))
    }
}

struct KeyedCount {
    backend: Box<dyn StateBackend>,
    key_groups: std::ops::Range<u32>,
    max_parallelism: u32,
    buf: Vec<u8>,
    /// The key group of each event of the batch being counted, computed once for the prefetch
    /// ahead and the count.
    kgs: Vec<KeyGroup>,
}

#[derive(Serialize)]
struct Output<'a> {
    key: &'a str,
    count: u64,
}

/// How many events ahead of the one being counted its state is prefetched: enough to overlap
/// the cache misses of a table too large for the caches (a lookup's miss is ~100 ns, the work
/// per event a few tens), few enough that the lines are still in L1 when their turn comes.
const PREFETCH_AHEAD: usize = 16;

/// Writes `{"key":…,"count":…}` as serde_json writes [`Output`]: a key of printable ASCII
/// without quotes or backslashes (the common case) is copied as it is, without serde_json's
/// escaping pass; any other goes through serde_json.
fn write_output(buf: &mut Vec<u8>, key: &[u8], count: &str) -> Result<(), String> {
    if key.iter().all(|&b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
        buf.extend_from_slice(b"{\"key\":\"");
        buf.extend_from_slice(key);
        buf.extend_from_slice(b"\",\"count\":");
        buf.extend_from_slice(count.as_bytes());
        buf.push(b'}');
        return Ok(());
    }
    let count = count.parse().map_err(|e| format!("{e}"))?;
    serde_json::to_writer(buf, &Output { key: &String::from_utf8_lossy(key), count }).map_err(|e| e.to_string())
}

impl Operator for KeyedCount {
    fn process(&mut self, _input: usize, input: &EventBatch, out: &mut Emitted) -> Result<(), String> {
        let out = &mut out.main;
        self.kgs.clear();
        for event in input.iter() {
            let key = event.key.ok_or("an event without a key reached a keyed operator")?;
            self.kgs.push(key_group(key, self.max_parallelism));
        }
        let (backend, kgs) = (&mut self.backend, &self.kgs);
        let prefetch = |backend: &dyn StateBackend, i: usize| {
            if let Some(&kg) = kgs.get(i) {
                backend.value_prefetch(0, kg, input.get(i).key.unwrap_or_default());
            }
        };
        (0..PREFETCH_AHEAD).for_each(|i| prefetch(&**backend, i));
        for (i, event) in input.iter().enumerate() {
            prefetch(&**backend, i + PREFETCH_AHEAD);
            let (key, kg) = (event.key.unwrap_or_default(), kgs[i]);
            self.buf.clear();
            let state = |e| format!("state backend: {e}");
            let count = if backend.value_get(0, kg, key, &mut self.buf).map_err(state)? {
                serde_json::from_slice::<u64>(&self.buf).map_err(|e| format!("stored count is not a number: {e}"))?
            } else {
                0
            } + 1;
            let mut digits = itoa::Buffer::new();
            let count_text = digits.format(count);
            backend.value_put(0, kg, key, count_text.as_bytes()).map_err(state)?;
            let mut result = Ok(());
            out.push_with(Some(key), event.timestamp, |buf| result = write_output(buf, key, count_text));
            result?;
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Vec<StateSnapshot>, String> {
        let body = self.backend.snapshot(self.key_groups.clone(), &states()).map_err(|e| e.to_string())?;
        Ok(vec![StateSnapshot { key_groups: self.key_groups.clone(), body, broadcast: None, part: None }])
    }

    fn into_state(self: Box<Self>) -> Vec<HandedOverState> {
        vec![HandedOverState { key_groups: self.key_groups, backend: self.backend, timers: None, broadcast: None }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_is_serde_jsons_for_plain_and_other_keys() {
        for key in [&b"k42"[..], b"with \"quotes\"", b"back\\slash", b"tab\there", "é".as_bytes(), b"\xff"] {
            let mut fast = Vec::new();
            write_output(&mut fast, key, "7").unwrap();
            let expected = serde_json::to_vec(&Output { key: &String::from_utf8_lossy(key), count: 7 }).unwrap();
            assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&expected));
        }
    }
}
