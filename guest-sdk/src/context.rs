use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::weir::operator::types;
use crate::describe::DeclaredState;
use crate::state::{BroadcastState, ListState, MapState, ValueState};
use crate::{Error, Result, StateKind};
pub use weir_frame::TimeDomain;
use weir_frame::{self as frame, TimerOp};

/// One event handed to [`crate::Operator::process`].
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The key set by an upstream operator (for example `key_by`), if any.
    pub key: Option<&'a [u8]>,
    /// The payload; its encoding is the operators' choice (the examples use JSON lines).
    pub value: &'a [u8],
    /// Event time in milliseconds since the Unix epoch, if the source or an operator set one.
    pub timestamp: Option<i64>,
    /// It came at or before the operator's watermark: windows it belongs to may have closed. Up
    /// to the operator to drop, count or use it.
    pub late: bool,
    /// The index of the operator's input it came from, in the job file's order (the order of
    /// [`crate::Description::input`]); see [`Context::input`] for its name.
    pub input: usize,
}

/// A due timer handed to [`crate::Operator::on_timer`].
#[derive(Debug, Clone, Copy)]
pub struct Timer<'a> {
    /// The key it was set for; state handles read and write this key's state.
    pub key: &'a [u8],
    /// When it was set for (milliseconds).
    pub time: i64,
    /// Whether event time or processing time reached it.
    pub domain: TimeDomain,
}

/// What a frame says of time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Time {
    pub(crate) watermark: Option<i64>,
    pub(crate) processing_time: i64,
}

impl Event<'_> {
    /// The value parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(self.value)?)
    }
}

/// What `open` learns about the instance: its configuration and where it runs.
pub struct OpenContext {
    pub(crate) config: String,
    pub(crate) context: types::Context,
    pub(crate) states: Vec<DeclaredState>,
    pub(crate) value_states: Vec<u32>,
}

/// The names of an operator's inputs and side outputs, as it declares them.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    pub(crate) inputs: Vec<String>,
    pub(crate) side_outputs: Vec<String>,
}

impl OpenContext {
    /// The operator's `config` table from the job file, parsed from JSON into `T`.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.config).map_err(|e| Error::new(format!("invalid config: {e}")))
    }

    /// The raw configuration, a JSON object.
    pub fn config_json(&self) -> &str {
        &self.config
    }

    /// The operator's uid in the job.
    pub fn uid(&self) -> &str {
        &self.context.uid
    }

    /// This instance's subtask index, from 0.
    pub fn subtask_index(&self) -> u32 {
        self.context.subtask_index
    }

    /// The operator's parallelism.
    pub fn parallelism(&self) -> u32 {
        self.context.parallelism
    }

    /// The job's max parallelism (number of key groups).
    pub fn max_parallelism(&self) -> u32 {
        self.context.max_parallelism
    }

    /// How many times the job has been restarted.
    pub fn attempt(&self) -> u32 {
        self.context.attempt
    }

    /// A handle to the declared value state `name`.
    pub fn value_state<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<ValueState<T>> {
        let index = self.declared(name, StateKind::Value)?;
        let pos = self.value_states.iter().position(|&i| i == index).unwrap_or_default();
        Ok(ValueState::new(name, index, pos))
    }

    /// A handle to the declared map state `name`.
    pub fn map_state<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<MapState<K, V>> {
        Ok(MapState::new(name, self.declared(name, StateKind::Map)?))
    }

    /// A handle to the declared list state `name`.
    pub fn list_state<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<ListState<T>> {
        Ok(ListState::new(name, self.declared(name, StateKind::List)?))
    }

    /// A handle to the declared broadcast state `name`.
    pub fn broadcast_state<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<BroadcastState<K, V>> {
        Ok(BroadcastState::new(self.declared(name, StateKind::Broadcast)?))
    }

    fn declared(&self, name: &str, kind: StateKind) -> Result<u32> {
        match self.states.iter().position(|s| s.name == name) {
            Some(i) if self.states[i].kind == kind => Ok(i as u32),
            Some(i) => Err(Error::new(format!(
                "state '{name}' is declared as {:?} state, not {kind:?} state",
                self.states[i].kind
            ))),
            None => Err(Error::new(format!("state '{name}' is not declared in describe()"))),
        }
    }
}

/// One value state's cell for one key of the batch.
#[derive(Default)]
pub(crate) struct Cell {
    pub(crate) value: CellValue,
    /// Holds the value once written in this batch; reused across batches.
    pub(crate) buf: Vec<u8>,
    pub(crate) dirty: bool,
}

#[derive(Default, Clone, Copy)]
pub(crate) enum CellValue {
    #[default]
    Absent,
    /// A byte range of the input frame: the value the host prefetched.
    Input(usize, usize),
    /// In `Cell::buf`.
    Written,
}

/// The keyed context of the event or timer being handled: its key's state and timers, time, and
/// the output.
pub struct Context<'a> {
    pub(crate) frame: &'a [u8],
    /// `key-count × value-state-count` cells, slot-major.
    pub(crate) cells: &'a mut [Cell],
    pub(crate) value_state_count: usize,
    pub(crate) slot: Option<u32>,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) timestamp: Option<i64>,
    /// The input of the event being processed.
    pub(crate) input: usize,
    pub(crate) streams: &'a Streams,
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) emitted: u32,
    pub(crate) time: Time,
    /// The output frame's timer operations, and how many.
    pub(crate) timer_ops: &'a mut Vec<u8>,
    pub(crate) timer_op_count: u32,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        frame: &'a [u8],
        cells: &'a mut [Cell],
        value_state_count: usize,
        streams: &'a Streams,
        out: &'a mut Vec<u8>,
        timer_ops: &'a mut Vec<u8>,
        time: Time,
    ) -> Self {
        Context {
            frame,
            cells,
            value_state_count,
            slot: None,
            key: None,
            timestamp: None,
            input: usize::MAX,
            streams,
            out,
            emitted: 0,
            time,
            timer_ops,
            timer_op_count: 0,
        }
    }

    /// How many events it emitted and timer operations it made.
    pub(crate) fn finish(self) -> (u32, u32) {
        (self.emitted, self.timer_op_count)
    }
}

impl Context<'_> {
    /// The operator's watermark: event time up to which every event has arrived (events at or
    /// before it are late). `None` before the first watermark.
    pub fn current_watermark(&self) -> Option<i64> {
        self.time.watermark
    }

    /// The host's clock, in milliseconds since the Unix epoch (the guest has none of its own).
    pub fn processing_time(&self) -> i64 {
        self.time.processing_time
    }

    /// The key of the current event or timer, if keyed.
    pub fn current_key(&self) -> Option<&[u8]> {
        self.key
    }

    /// The name of the input the current event came from, as [`crate::Description::input`]
    /// declares it (`""` when the operator declares no inputs, or in `on_timer`).
    pub fn input(&self) -> &str {
        self.streams.inputs.get(self.input).map_or("", String::as_str)
    }

    /// Sets an event-time timer for the current key at `time`: [`crate::Operator::on_timer`] is
    /// called for it once the watermark reaches `time`. One timer per key and time.
    pub fn register_event_time_timer(&mut self, time: i64) -> Result<()> {
        self.timer_op(TimeDomain::EventTime, false, time)
    }

    /// Deletes the current key's event-time timer at `time`, if set.
    pub fn delete_event_time_timer(&mut self, time: i64) -> Result<()> {
        self.timer_op(TimeDomain::EventTime, true, time)
    }

    /// Sets a processing-time timer for the current key at `time` (see
    /// [`Context::processing_time`]).
    pub fn register_processing_time_timer(&mut self, time: i64) -> Result<()> {
        self.timer_op(TimeDomain::ProcessingTime, false, time)
    }

    /// Deletes the current key's processing-time timer at `time`, if set.
    pub fn delete_processing_time_timer(&mut self, time: i64) -> Result<()> {
        self.timer_op(TimeDomain::ProcessingTime, true, time)
    }

    fn timer_op(&mut self, domain: TimeDomain, delete: bool, time: i64) -> Result<()> {
        let slot = self.slot.ok_or_else(|| {
            Error::new("timers are kept per key, but this operator's input is not keyed: set input = \"hash\" on it in the job file")
        })?;
        frame::put_u32(self.timer_ops, slot);
        self.timer_ops.push(TimerOp { domain, delete }.to_byte());
        frame::put_i64(self.timer_ops, time);
        self.timer_op_count += 1;
        Ok(())
    }

    /// Emits `value` with the current event's key and timestamp.
    pub fn emit(&mut self, value: &[u8]) {
        self.emit_event(self.key, value, self.timestamp);
    }

    /// Emits `value` serialized as JSON, with the current event's key and timestamp.
    pub fn emit_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.emit_json_on(0, value)
    }

    /// Emits `value` to side output `side` (declared with [`crate::Description::side_output`]),
    /// with the current event's key and timestamp.
    pub fn emit_to(&mut self, side: &str, value: &[u8]) -> Result<()> {
        let output = self.side_output(side)?;
        self.emit_on(output, self.key, value, self.timestamp);
        Ok(())
    }

    /// Emits `value` serialized as JSON to side output `side`, with the current event's key and
    /// timestamp.
    pub fn emit_json_to<T: Serialize + ?Sized>(&mut self, side: &str, value: &T) -> Result<()> {
        let output = self.side_output(side)?;
        self.emit_json_on(output, value)
    }

    /// The output number of side output `side`: 1 + its index among the declared ones.
    fn side_output(&self, side: &str) -> Result<u8> {
        match self.streams.side_outputs.iter().position(|s| s == side) {
            Some(i) => Ok(i as u8 + 1),
            None => Err(Error::new(format!(
                "side output '{side}' is not declared in describe(): declare it with .side_output(\"{side}\")"
            ))),
        }
    }

    fn emit_json_on<T: Serialize + ?Sized>(&mut self, output: u8, value: &T) -> Result<()> {
        self.out.push(output);
        frame::put_opt_bytes(self.out, self.key);
        frame::put_opt_ts(self.out, self.timestamp);
        let len_at = self.out.len();
        frame::put_u32(self.out, 0);
        serde_json::to_writer(&mut *self.out, value)?;
        let len = self.out.len() - len_at - 4;
        frame::patch_u32(self.out, len_at, len as u32);
        self.emitted += 1;
        Ok(())
    }

    /// Emits an event with an explicit key and timestamp.
    pub fn emit_event(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: Option<i64>) {
        self.emit_on(0, key, value, timestamp);
    }

    fn emit_on(&mut self, output: u8, key: Option<&[u8]>, value: &[u8], timestamp: Option<i64>) {
        self.out.push(output);
        frame::put_opt_bytes(self.out, key);
        frame::put_opt_ts(self.out, timestamp);
        frame::put_bytes(self.out, value);
        self.emitted += 1;
    }

    /// The slot of the current event's key, or an error naming the state when the operator's
    /// input is not keyed.
    #[inline]
    pub(crate) fn slot(&self, state: &str) -> Result<u32> {
        self.slot.ok_or_else(|| {
            Error::new(format!(
                "state '{state}' is keyed state, but this operator's input is not keyed: \
                 set input = \"hash\" on it in the job file"
            ))
        })
    }

    #[inline]
    pub(crate) fn cell(&mut self, state: &str, pos: usize) -> Result<&mut Cell> {
        let slot = self.slot(state)? as usize;
        Ok(&mut self.cells[slot * self.value_state_count + pos])
    }

    #[inline]
    pub(crate) fn value_bytes(&mut self, state: &str, pos: usize) -> Result<Option<&[u8]>> {
        let frame = self.frame;
        let cell = self.cell(state, pos)?;
        Ok(match cell.value {
            CellValue::Absent => None,
            CellValue::Input(start, end) => Some(&frame[start..end]),
            CellValue::Written => Some(&cell.buf[..]),
        })
    }
}
