//! Glue between the generated exports and an [`Operator`]: decodes input frames, runs the
//! operator per event, encodes output frames. Called only by [`crate::export_operator!`].
use crate::bindings::weir::operator::types;
use crate::context::{Cell, CellValue, Context, OpenContext};
use crate::{Event, Operator, StateKind};
use weir_frame::{self as frame, NONE, Reader};

/// The operator instance and the buffers reused from batch to batch.
pub struct Runtime<O> {
    operator: O,
    /// Global state index of each value state, in declaration order (the frames' order).
    value_states: Vec<u32>,
    cells: Vec<Cell>,
    /// Byte range of each slot's key in the input frame.
    keys: Vec<(usize, usize)>,
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
                },
                schema_version: s.schema_version,
                migrates_from: s.migrates_from,
            })
            .collect(),
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
        let states = O::describe().states;
        let value_states = (0..states.len() as u32).filter(|&i| states[i as usize].kind == StateKind::Value).collect();
        let open = OpenContext { config, context, states, value_states };
        let operator = O::open(&open).map_err(|e| e.to_string())?;
        Ok(Runtime { operator, value_states: open.value_states, cells: Vec::new(), keys: Vec::new() })
    }

    /// Processes one input frame and returns the output frame.
    pub fn process_batch(&mut self, input: &[u8]) -> Result<Vec<u8>, String> {
        let mut r = Reader::new(input);
        let key_count = r.u32()? as usize;
        let value_state_count = r.u32()? as usize;
        let event_count = r.u32()?;
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
        let keys = &mut self.keys;
        keys.clear();
        for slot in 0..key_count {
            let key = r.bytes()?;
            keys.push((r.position() - key.len(), r.position()));
            for pos in 0..value_state_count {
                let cell = &mut self.cells[slot * value_state_count + pos];
                cell.dirty = false;
                cell.value = match r.opt_bytes()? {
                    Some(v) => CellValue::Input(r.position() - v.len(), r.position()),
                    None => CellValue::Absent,
                };
            }
        }

        let mut out = Vec::with_capacity(input.len() + 64);
        frame::put_u32(&mut out, 0); // emit count, patched below
        let mut ctx = Context {
            input,
            cells: &mut self.cells[..cell_count],
            value_state_count,
            slot: None,
            key: None,
            timestamp: None,
            out: &mut out,
            emitted: 0,
        };
        for _ in 0..event_count {
            let slot = r.u32()?;
            let key = if slot == NONE {
                r.opt_bytes()?
            } else {
                let &(start, end) = keys
                    .get(slot as usize)
                    .ok_or_else(|| format!("malformed input frame: slot {slot} of {key_count}"))?;
                Some(&input[start..end])
            };
            let timestamp = r.opt_ts()?;
            let value = r.bytes()?;
            ctx.slot = (slot != NONE).then_some(slot);
            ctx.key = key;
            ctx.timestamp = timestamp;
            let event = Event { key, value, timestamp };
            self.operator.process(&mut ctx, &event).map_err(|e| e.to_string())?;
        }
        let emitted = ctx.emitted;
        frame::patch_u32(&mut out, 0, emitted);

        // Write set: every value state cell written in this batch, last value wins.
        let writes_at = out.len();
        frame::put_u32(&mut out, 0);
        let mut writes = 0;
        for (i, cell) in self.cells[..cell_count].iter().enumerate().filter(|(_, c)| c.dirty) {
            frame::put_u32(&mut out, (i / value_state_count) as u32);
            frame::put_u32(&mut out, self.value_states[i % value_state_count]);
            let value = match cell.value {
                CellValue::Written => Some(&cell.buf[..]),
                CellValue::Input(start, end) => Some(&input[start..end]),
                CellValue::Absent => None,
            };
            frame::put_opt_bytes(&mut out, value);
            writes += 1;
        }
        frame::patch_u32(&mut out, writes_at, writes);
        Ok(out)
    }
}
