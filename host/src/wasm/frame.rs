//! The host side of the batch frames (`docs/batch-frames.md`): build an input frame with the
//! batch's key table and prefetched value state, or a timer frame with the due timers' keys; apply
//! an output frame's emits, writes and (0.3.0) timer operations.
use weir_frame::{
    LATE, NO_WATERMARK, NONE, Reader, TimeDomain, TimerOp, put_bytes, put_i64, put_opt_bytes, put_opt_bytes_with,
    put_opt_ts, put_u32,
};

use super::host::KeyedState;
use crate::key_group::key_group;
use crate::runtime::{Emitted, Event, EventBatch, MAX_EVENT_BYTES};
use crate::state::{StateKind, Timer, ttl};

/// What a 0.3.0 frame says of time: the operator's watermark and the host's clock (milliseconds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameTime {
    pub(crate) watermark: i64,
    pub(crate) now: i64,
}

/// Writes the input frame for the events `events` of `input` into `frame`. For a keyed operator
/// (`max_parallelism` set) the key table holds each distinct key once, in order of first
/// appearance, with the current value of every value state; `keyed` remembers the table so that
/// host calls can resolve slots. With `time` (0.3.0), the frame carries it and each event's late
/// flag; with `stream` (0.4.0), each event the index of the operator's input it came from.
#[allow(clippy::too_many_arguments)] // the frame's parts, and the buffers reused from batch to batch
pub(crate) fn encode_input(
    input: &EventBatch,
    events: std::ops::Range<usize>,
    stream: Option<u8>,
    keyed: &mut KeyedState,
    value_states: &[u32],
    max_parallelism: Option<u32>,
    time: Option<FrameTime>,
    frame: &mut Vec<u8>,
    event_slots: &mut Vec<u32>,
) -> Result<(), String> {
    frame.clear();
    keyed.clear_key_table(if max_parallelism.is_some() { events.len() } else { 0 });
    event_slots.clear();
    if let Some(max_parallelism) = max_parallelism {
        for event in events.clone().map(|i| input.get(i)) {
            // The router only lets keyed events through to a keyed operator.
            let key = event.key.ok_or("an event without a key reached a keyed operator")?;
            event_slots.push(keyed.slot_of(key, || key_group(key, max_parallelism)));
        }
    }

    put_key_table(keyed, value_states, events.len(), time, frame)?;
    for (i, event) in events.map(|i| input.get(i)).enumerate() {
        match event_slots.get(i) {
            Some(&slot) => put_u32(frame, slot),
            None => {
                put_u32(frame, NONE);
                put_opt_bytes(frame, event.key);
            }
        }
        put_opt_ts(frame, event.timestamp);
        if let Some(time) = time {
            let late = time.watermark != NO_WATERMARK && event.timestamp.is_some_and(|t| t <= time.watermark);
            frame.push(if late { LATE } else { 0 });
        }
        if let Some(stream) = stream {
            frame.push(stream);
        }
        put_bytes(frame, event.value);
    }
    Ok(())
}

/// How many keys ahead of the one being read their value states are prefetched: enough to overlap
/// the cache misses of state too large for the caches (~100 ns each), few enough that the lines
/// are still in L1 when read. (Prefetching a whole batch first overlapped less: the CPU holds
/// only so many misses in flight, and the first keys' lines were gone by their turn.)
const PREFETCH_AHEAD: usize = 16;

/// Writes a frame's header (`count` events or timers) and its key table, the keys of
/// `keyed.slots` with the value of each value state, prefetched [`PREFETCH_AHEAD`] keys ahead.
fn put_key_table(
    keyed: &KeyedState,
    value_states: &[u32],
    count: usize,
    time: Option<FrameTime>,
    frame: &mut Vec<u8>,
) -> Result<(), String> {
    keyed.prefetch_values(value_states, 0..PREFETCH_AHEAD);
    put_u32(frame, keyed.slots.len() as u32);
    put_u32(frame, value_states.len() as u32);
    put_u32(frame, count as u32);
    if let Some(time) = time {
        put_i64(frame, time.watermark);
        put_i64(frame, time.now);
    }
    let now = ttl::now_ms();
    for (i, &(kg, start, end)) in keyed.slots.iter().enumerate() {
        keyed.prefetch_values(value_states, i + PREFETCH_AHEAD..i + PREFETCH_AHEAD + 1);
        let key = &keyed.keys[start as usize..end as usize];
        put_bytes(frame, key);
        for &state in value_states {
            let expires = keyed.ttl_of(state).is_some();
            let mut result = Ok(false);
            put_opt_bytes_with(frame, |out| {
                let at = out.len();
                result = keyed.backend.value_get(state, kg, key, out);
                let found = *result.as_ref().unwrap_or(&false);
                // A value with a time-to-live: absent once expired, else without its expiry.
                match (found, expires) {
                    (true, true) if ttl::unwrap(&out[at..], now).is_some() => {
                        out.drain(at..at + ttl::EXPIRY_BYTES);
                        true
                    }
                    (true, true) => false,
                    (found, _) => found,
                }
            });
            result.map_err(|e| format!("state backend: {e}"))?;
        }
    }
    Ok(())
}

/// Writes the timer frame (0.3.0) for `due`, timers of their domain in time order: the key table
/// of their keys, then each timer's slot, domain and time.
pub(crate) fn encode_timers(
    due: &[(TimeDomain, Timer)],
    keyed: &mut KeyedState,
    value_states: &[u32],
    time: FrameTime,
    frame: &mut Vec<u8>,
) -> Result<(), String> {
    frame.clear();
    keyed.clear_key_table(due.len());
    // A key's key group is a function of the key: the key alone tells timers' keys apart.
    let slots: Vec<u32> = due.iter().map(|(_, timer)| keyed.slot_of(&timer.key, || timer.key_group)).collect();
    put_key_table(keyed, value_states, due.len(), Some(time), frame)?;
    for ((domain, timer), slot) in due.iter().zip(slots) {
        put_u32(frame, slot);
        frame.push(*domain as u8);
        put_i64(frame, timer.time);
    }
    Ok(())
}

/// What an output frame may carry beyond 0.2.0's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutputShape {
    /// Timer operations (0.3.0).
    pub(crate) timers: bool,
    /// Each emitted event's output (0.4.0): the number of side outputs the operator declares.
    pub(crate) side_outputs: Option<usize>,
}

/// Appends the output frame's emitted events to `out` and applies its value-state writes and, with
/// timers (0.3.0), its timer operations. Events of the main output keep pointing into the frame,
/// which `out.main` takes over: no per-event copy. Side outputs' events (0.4.0) are copied.
pub(crate) fn apply_output(
    output: Vec<u8>,
    keyed: &mut KeyedState,
    value_states: &[u32],
    shape: OutputShape,
    out: &mut Emitted,
) -> Result<(), String> {
    let events_before = out.main.len();
    let side_before: Vec<usize> = out.side.iter().map(EventBatch::len).collect();
    // Malformed-frame errors, the reader's and `read_output`'s own, are said to be the guest's here.
    let result =
        read_output(&output, keyed, value_states, shape, out).map_err(|e| match e.strip_prefix("malformed frame: ") {
            Some(what) => format!("the guest returned a malformed output frame: {what}"),
            None => e,
        });
    match result {
        Ok(()) => out.main.append_buffer(output),
        // What the failed call emitted goes: `out` is left as it was (the main output's events
        // point into the frame, which it did not take).
        Err(_) => {
            out.main.truncate(events_before);
            out.side.truncate(side_before.len());
            out.side.iter_mut().zip(side_before).for_each(|(side, len)| side.truncate(len));
        }
    }
    result
}

fn read_output(
    output: &[u8],
    keyed: &mut KeyedState,
    value_states: &[u32],
    shape: OutputShape,
    out: &mut Emitted,
) -> Result<(), String> {
    let base = out.main.next_buffer_offset();
    let mut r = Reader::new(output);
    // Where `bytes` just read lie in `output`, shifted to where `out` will hold them.
    let range = |r: &Reader, len: usize| base + r.position() - len..base + r.position();
    let emitted = r.u32()?;
    for _ in 0..emitted {
        let to = match shape.side_outputs {
            Some(declared) => match r.u8()? {
                k if k as usize > declared => {
                    return Err(format!(
                        "the operator emitted to side output #{k}, and it declares {declared} side outputs in its \
                         `describe`: declare each side output it emits to"
                    ));
                }
                k => k,
            },
            None => 0,
        };
        if to > 0 {
            let key = r.opt_bytes()?;
            let timestamp = r.opt_ts()?;
            let value = r.bytes()?;
            check_event_size(key.map_or(0, <[u8]>::len), value.len())?;
            out.to(to).push(Event { key, value, timestamp });
            continue;
        }
        let key = r.opt_bytes()?.map(|k| range(&r, k.len()));
        let timestamp = r.opt_ts()?;
        let value = r.bytes()?.len();
        check_event_size(key.as_ref().map_or(0, |k| k.len()), value)?;
        out.main.push_ranges(key, range(&r, value), timestamp);
    }
    // Under quarantine (a call that may be taken back: `keyed.undo` is set), the write set and
    // the timer operations are checked whole before any is applied, so that a malformed frame
    // leaves the state as it was for the retry. Otherwise a malformed frame fails the job, whose
    // state goes with it: one pass checks and applies.
    let rest = &output[r.position()..];
    if keyed.undo.is_some() {
        write_set(rest, keyed, value_states, shape, false)?;
    }
    write_set(rest, keyed, value_states, shape, true)
}

/// Reads the write set and timer operations at the start of `frame` (the rest of an output frame),
/// checking them, and with `apply` applying them. An error in applying them is the host's (its
/// state backend, the state limit), recorded as such in `keyed.host_fault`.
fn write_set(
    frame: &[u8],
    keyed: &mut KeyedState,
    value_states: &[u32],
    shape: OutputShape,
    apply: bool,
) -> Result<(), String> {
    let malformed = |what: String| format!("malformed frame: {what}");
    let host_fault = |keyed: &mut KeyedState, message: String| {
        keyed.host_fault = Some(message.clone());
        message
    };
    let mut r = Reader::new(frame);
    let writes = r.u32()?;
    if writes > 0 && apply {
        // The guest's call may have pushed the batch's state lines out of L1; they are in L2.
        keyed.prefetch_values(value_states, 0..keyed.slots.len());
    }
    let (now, mut stored) = (ttl::now_ms(), Vec::new());
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
        if !apply {
            continue;
        }
        let key = &keyed.keys[start as usize..end as usize];
        let value = match (value, keyed.ttl_of(state)) {
            (Some(value), Some(time_to_live)) => {
                ttl::wrap(time_to_live, now, value, &mut stored);
                Some(&stored[..])
            }
            (value, _) => value,
        };
        let written = match value {
            Some(value) => keyed.backend.value_put(state, kg, key, value),
            None => keyed.backend.clear(state, kg, key),
        };
        written.map_err(|e| host_fault(keyed, format!("state backend: {e}")))?;
    }
    if shape.timers {
        timer_ops(&mut r, keyed, apply)?;
    }
    if !r.is_at_end() {
        let what = if shape.timers { "timer operations" } else { "write set" };
        return Err(malformed(format!("{} bytes after the {what}", frame.len() - r.position())));
    }
    match apply {
        true => keyed.check_limit().map_err(|e| host_fault(keyed, e)),
        false => Ok(()),
    }
}

/// Refuses an emitted event larger than an event may be.
fn check_event_size(key_len: usize, value: usize) -> Result<(), String> {
    if key_len + value > MAX_EVENT_BYTES {
        return Err(format!(
            "the operator emitted an event of {} bytes (key {key_len}, value {value}), over the {} MiB an event may \
             have: emit smaller events",
            key_len + value,
            MAX_EVENT_BYTES >> 20
        ));
    }
    Ok(())
}

/// Reads the timer operations an output frame names, checking them, and with `apply` registers
/// and deletes those timers.
fn timer_ops(r: &mut Reader, keyed: &mut KeyedState, apply: bool) -> Result<(), String> {
    let ops = r.u32()?;
    if ops == 0 {
        return Ok(());
    }
    let KeyedState { backend, timers, slots, keys, host_fault, .. } = keyed;
    let Some(timers) = timers.as_mut() else {
        return Err("the operator set a timer, but timers are kept per key: give it a keyed input \
                    (`input = \"hash\"`)"
            .to_string());
    };
    for _ in 0..ops {
        let slot = r.u32()?;
        let op = r.u8()?;
        let time = r.i64()?;
        let &(kg, start, end) = slots.get(slot as usize).ok_or_else(|| {
            format!("malformed frame: a timer for slot {slot}, but the batch has {} keys", slots.len())
        })?;
        let op = TimerOp::from_byte(op).ok_or_else(|| format!("malformed frame: timer operation {op}"))?;
        if !apply {
            continue;
        }
        let key = &keys[start as usize..end as usize];
        timers.apply(&mut **backend, op, time, kg, key).map_err(|e| {
            let message = format!("state backend: {e}");
            *host_fault = Some(message.clone());
            message
        })?;
    }
    Ok(())
}
