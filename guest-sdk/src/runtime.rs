//! Glue between the generated exports and an [`Operator`]: decodes input and timer frames, runs
//! the operator per event or timer, encodes output frames. Called only by
//! [`crate::export_operator!`].
use crate::bindings::weir::operator::types;
use crate::context::{Cell, CellValue, Context, OpenContext, Streams, Time};
use crate::{Event, Operator, StateKind, Timer};
use weir_frame::{self as frame, LATE, NO_WATERMARK, NONE, Reader, TimeDomain};

/// The operator instance and the buffers reused from batch to batch.
pub struct Runtime<O> {
    operator: O,
    /// Global state index of each value state, in declaration order (the frames' order).
    value_states: Vec<u32>,
    cells: Vec<Cell>,
    /// Byte range of each slot's key in the input frame.
    keys: Vec<(usize, usize)>,
    streams: Streams,
}

/// Converts the operator's description to the WIT record.
pub fn describe<O: Operator>() -> types::Description {
    let d = O::describe();
    types::Description {
        name: d.name,
        version: d.version,
        states: d
            .states
            .into_iter()
            .map(|s| types::StateDescriptor {
                name: s.name,
                kind: match s.kind {
                    StateKind::Value => types::StateKind::Value,
                    StateKind::Map => types::StateKind::Map,
                    StateKind::List => types::StateKind::List,
                    StateKind::Broadcast => types::StateKind::Broadcast,
                },
                schema_version: s.schema_version,
                migrates_from: s.migrates_from,
                time_to_live: s.time_to_live,
            })
            .collect(),
        inputs: d.inputs,
        side_outputs: d.side_outputs,
    }
}

/// Runs the operator's migration of declared state `state` over one key group's items.
pub fn migrate<O: Operator>(state: u32, from_version: u32, items: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, String> {
    let states = O::describe().states;
    let name =
        &states.get(state as usize).ok_or_else(|| format!("the host asked to migrate undeclared state #{state}"))?.name;
    items.iter().map(|item| O::migrate(name, from_version, item).map_err(|e| e.to_string())).collect()
}

impl<O: Operator> Runtime<O> {
    /// Builds the operator from its configuration.
    pub fn open(config: String, context: types::Context) -> Result<Self, String> {
        let d = O::describe();
        let states = d.states;
        let value_states = (0..states.len() as u32).filter(|&i| states[i as usize].kind == StateKind::Value).collect();
        let open = OpenContext { config, context, states, value_states };
        let operator = O::open(&open).map_err(|e| e.to_string())?;
        let streams = Streams { inputs: d.inputs, side_outputs: d.side_outputs };
        Ok(Runtime { operator, value_states: open.value_states, cells: Vec::new(), keys: Vec::new(), streams })
    }

    /// Reads a frame's header and key table, filling the cells with the prefetched values;
    /// returns the count of events or timers that follow, the number of cells, and the time.
    fn read_header(&mut self, r: &mut Reader) -> Result<(u32, usize, Time), String> {
        let key_count = r.u32()? as usize;
        let value_state_count = r.u32()? as usize;
        let count = r.u32()?;
        let watermark = r.i64()?;
        let processing_time = r.i64()?;
        if value_state_count != self.value_states.len() {
            return Err(format!(
                "the host sent {value_state_count} value states but the operator declares {}",
                self.value_states.len()
            ));
        }
        // Key table: remember each key's byte range and each value state's prefetched value.
        let cell_count = key_count * value_state_count;
        if self.cells.len() < cell_count {
            self.cells.resize_with(cell_count, Cell::default);
        }
        self.keys.clear();
        for slot in 0..key_count {
            let key = r.bytes()?;
            self.keys.push((r.position() - key.len(), r.position()));
            for pos in 0..value_state_count {
                let cell = &mut self.cells[slot * value_state_count + pos];
                cell.dirty = false;
                cell.value = match r.opt_bytes()? {
                    Some(v) => CellValue::Input(r.position() - v.len(), r.position()),
                    None => CellValue::Absent,
                };
            }
        }
        let watermark = (watermark != NO_WATERMARK).then_some(watermark);
        Ok((count, cell_count, Time { watermark, processing_time }))
    }

    /// Processes one input frame and returns the output frame.
    pub fn process_batch(&mut self, input: &[u8]) -> Result<Vec<u8>, String> {
        let mut r = Reader::new(input);
        let (event_count, cell_count, time) = self.read_header(&mut r)?;
        let Runtime { operator, value_states, cells, keys, streams } = self;
        let (mut out, mut timer_ops) = (Vec::with_capacity(input.len() + 64), Vec::new());
        frame::put_u32(&mut out, 0); // emit count, patched in `finish`
        let cells = &mut cells[..cell_count];
        let mut ctx = Context::new(input, cells, value_states.len(), streams, &mut out, &mut timer_ops, time);
        for _ in 0..event_count {
            let slot = r.u32()?;
            let key = match slot {
                NONE => r.opt_bytes()?,
                slot => Some(key_of(keys, input, slot)?),
            };
            let timestamp = r.opt_ts()?;
            let late = r.u8()? & LATE != 0;
            let input = r.u8()? as usize;
            let value = r.bytes()?;
            ctx.slot = (slot != NONE).then_some(slot);
            ctx.key = key;
            ctx.timestamp = timestamp;
            ctx.input = input;
            let event = Event { key, value, timestamp, late, input };
            operator.process(&mut ctx, &event).map_err(|e| e.to_string())?;
        }
        let counts = ctx.finish();
        Ok(finish(input, cells, value_states, counts, out, timer_ops))
    }

    /// Fires one timer frame's timers and returns the output frame.
    pub fn on_timers(&mut self, input: &[u8]) -> Result<Vec<u8>, String> {
        let mut r = Reader::new(input);
        let (timer_count, cell_count, time) = self.read_header(&mut r)?;
        let Runtime { operator, value_states, cells, keys, streams } = self;
        let (mut out, mut timer_ops) = (Vec::with_capacity(64), Vec::new());
        frame::put_u32(&mut out, 0); // emit count, patched in `finish`
        let cells = &mut cells[..cell_count];
        let mut ctx = Context::new(input, cells, value_states.len(), streams, &mut out, &mut timer_ops, time);
        for _ in 0..timer_count {
            let slot = r.u32()?;
            let key = key_of(keys, input, slot)?;
            let domain = r.u8()?;
            let domain =
                TimeDomain::from_byte(domain).ok_or_else(|| format!("malformed frame: timer domain {domain}"))?;
            let at = r.i64()?;
            ctx.slot = Some(slot);
            ctx.key = Some(key);
            // What an event-time timer emits happens at its time (as in Flink).
            ctx.timestamp = (domain == TimeDomain::EventTime).then_some(at);
            let timer = Timer { key, time: at, domain };
            operator.on_timer(&mut ctx, &timer).map_err(|e| e.to_string())?;
        }
        let counts = ctx.finish();
        Ok(finish(input, cells, value_states, counts, out, timer_ops))
    }
}

/// The key of `slot`, from the byte ranges of the frame's key table.
fn key_of<'f>(keys: &[(usize, usize)], input: &'f [u8], slot: u32) -> Result<&'f [u8], String> {
    let &(start, end) =
        keys.get(slot as usize).ok_or_else(|| format!("malformed frame: slot {slot} of {}", keys.len()))?;
    Ok(&input[start..end])
}

/// Completes an output frame: the emit count, the write set (every value state cell written,
/// last value wins) and the timer operations.
fn finish(
    input: &[u8],
    cells: &[Cell],
    value_states: &[u32],
    (emitted, timer_op_count): (u32, u32),
    mut out: Vec<u8>,
    timer_ops: Vec<u8>,
) -> Vec<u8> {
    frame::patch_u32(&mut out, 0, emitted);
    let writes_at = out.len();
    frame::put_u32(&mut out, 0);
    let mut writes = 0;
    for (i, cell) in cells.iter().enumerate().filter(|(_, c)| c.dirty) {
        frame::put_u32(&mut out, (i / value_states.len()) as u32);
        frame::put_u32(&mut out, value_states[i % value_states.len()]);
        let value = match cell.value {
            CellValue::Written => Some(&cell.buf[..]),
            CellValue::Input(start, end) => Some(&input[start..end]),
            CellValue::Absent => None,
        };
        frame::put_opt_bytes(&mut out, value);
        writes += 1;
    }
    frame::patch_u32(&mut out, writes_at, writes);
    frame::put_u32(&mut out, timer_op_count);
    out.extend_from_slice(&timer_ops);
    out
}
