//! The host side of the batch frames (`docs/batch-frames.md`): build an input frame with the
//! batch's key table and prefetched value state, apply an output frame's emits and writes.
use std::collections::HashMap;

use weir_frame::{NONE, Reader, put_bytes, put_opt_bytes, put_opt_bytes_with, put_opt_ts, put_u32};

use super::host::KeyedState;
use crate::key_group::key_group;
use crate::runtime::EventBatch;
use crate::state::{StateKind, same_bytes};

/// A key of the batch's key index, compared without a `memcmp` call when short.
#[derive(Hash)]
struct Key<'a>(&'a [u8]);

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        same_bytes(self.0, other.0)
    }
}

impl Eq for Key<'_> {}

/// Writes the input frame for the events `events` of `input` into `frame`. For a keyed operator
/// (`max_parallelism` set) the key table holds each distinct key once, in order of first
/// appearance, with the current value of every value state; `keyed` remembers the table so that
/// host calls can resolve slots.
pub(crate) fn encode_input(
    input: &EventBatch,
    events: std::ops::Range<usize>,
    keyed: &mut KeyedState,
    value_states: &[u32],
    max_parallelism: Option<u32>,
    frame: &mut Vec<u8>,
    event_slots: &mut Vec<u32>,
) -> Result<(), String> {
    frame.clear();
    keyed.slots.clear();
    keyed.keys.clear();
    event_slots.clear();
    if let Some(max_parallelism) = max_parallelism {
        let mut index: HashMap<Key, u32, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(events.len(), Default::default());
        for event in events.clone().map(|i| input.get(i)) {
            // The router only lets keyed events through to a keyed operator.
            let key = event.key.ok_or("an event without a key reached a keyed operator")?;
            let slot = *index.entry(Key(key)).or_insert_with(|| {
                let start = keyed.keys.len() as u32;
                keyed.keys.extend_from_slice(key);
                keyed.slots.push((key_group(key, max_parallelism), start, keyed.keys.len() as u32));
                keyed.slots.len() as u32 - 1
            });
            event_slots.push(slot);
        }
    }

    keyed.prefetch_values(value_states);
    put_u32(frame, keyed.slots.len() as u32);
    put_u32(frame, value_states.len() as u32);
    put_u32(frame, events.len() as u32);
    for &(kg, start, end) in &keyed.slots {
        let key = &keyed.keys[start as usize..end as usize];
        put_bytes(frame, key);
        for &state in value_states {
            let mut result = Ok(false);
            put_opt_bytes_with(frame, |out| {
                result = keyed.backend.value_get(state, kg, key, out);
                *result.as_ref().unwrap_or(&false)
            });
            result.map_err(|e| format!("state backend: {e}"))?;
        }
    }
    for (i, event) in events.map(|i| input.get(i)).enumerate() {
        match event_slots.get(i) {
            Some(&slot) => put_u32(frame, slot),
            None => {
                put_u32(frame, NONE);
                put_opt_bytes(frame, event.key);
            }
        }
        put_opt_ts(frame, event.timestamp);
        put_bytes(frame, event.value);
    }
    Ok(())
}

/// Appends the output frame's emitted events to `out` and applies its value-state writes. The
/// events keep pointing into the frame, which `out` takes over: no per-event copy.
pub(crate) fn apply_output(
    output: Vec<u8>,
    keyed: &mut KeyedState,
    value_states: &[u32],
    out: &mut EventBatch,
) -> Result<(), String> {
    let events_before = out.len();
    // Malformed-frame errors, the reader's and `read_output`'s own, are said to be the guest's here.
    let result =
        read_output(&output, keyed, value_states, out).map_err(|e| match e.strip_prefix("malformed frame: ") {
            Some(what) => format!("the guest returned a malformed output frame: {what}"),
            None => e,
        });
    match result {
        Ok(()) => out.append_buffer(output),
        Err(_) => out.truncate(events_before),
    }
    result
}

fn read_output(
    output: &[u8],
    keyed: &mut KeyedState,
    value_states: &[u32],
    out: &mut EventBatch,
) -> Result<(), String> {
    let malformed = |what: String| format!("malformed frame: {what}");
    let base = out.next_buffer_offset();
    let mut r = Reader::new(output);
    // Where `bytes` just read lie in `output`, shifted to where `out` will hold them.
    let range = |r: &Reader, len: usize| base + r.position() - len..base + r.position();
    let emitted = r.u32()?;
    for _ in 0..emitted {
        let key = r.opt_bytes()?.map(|k| range(&r, k.len()));
        let timestamp = r.opt_ts()?;
        let value = r.bytes()?.len();
        out.push_ranges(key, range(&r, value), timestamp);
    }
    let writes = r.u32()?;
    if writes > 0 {
        keyed.prefetch_values(value_states);
    }
    for _ in 0..writes {
        let slot = r.u32()?;
        let state = r.u32()?;
        let value = r.opt_bytes()?;
        let &(kg, start, end) = keyed.slots.get(slot as usize).ok_or_else(|| {
            malformed(format!("a write to slot {slot}, but the batch has {} keys", keyed.slots.len()))
        })?;
        if keyed.kinds.get(state as usize) != Some(&StateKind::Value) {
            return Err(malformed(format!("a write to state #{state}, which is not a declared value state")));
        }
        let key = &keyed.keys[start as usize..end as usize];
        match value {
            Some(value) => keyed.backend.value_put(state, kg, key, value),
            None => keyed.backend.clear(state, kg, key),
        }
        .map_err(|e| format!("state backend: {e}"))?;
    }
    if !r.is_at_end() {
        return Err(malformed(format!("{} bytes after the write set", output.len() - r.position())));
    }
    keyed.check_limit()
}
