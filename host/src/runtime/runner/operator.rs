//! An operator subtask's loop: process each batch, hand what it emits to its chained sinks or
//! downstream, take its part of each aligned barrier, and at the end of a handover leave its
//! state for the next run.
use std::sync::atomic::Ordering;

use super::{Input, Output, Received, SinkDriver, Stop, TaskContext, checkpoint};
use crate::runtime::metrics::{Counters, clock_ns};
use crate::runtime::{EventBatch, Operator, SubtaskInfo};

/// Runs operator subtask `info` until every input has ended or the run stops.
pub(crate) fn run_operator(
    mut operator: Box<dyn Operator>,
    info: &SubtaskInfo,
    inputs: &mut dyn Input,
    output: &mut dyn Output,
    mut sinks: Vec<SinkDriver>,
    ctx: &dyn TaskContext,
    counters: &Counters,
) -> Result<(), Stop> {
    let mut out = EventBatch::default();
    let mut block = false;
    loop {
        let received = if block { Some(inputs.recv()?) } else { inputs.try_recv()? };
        let Some(received) = received else {
            // Nothing waiting: send what routing held back before blocking for more.
            output.flush()?;
            block = true;
            continue;
        };
        match received {
            Received::Batch(batch) => {
                block = false;
                counters.events_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
                operator.process(&batch, &mut out)?;
                let now = clock_ns();
                let _ = counters.first_batch_ns.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                counters.last_batch_ns.store(now, Ordering::Relaxed);
                counters.events_out.fetch_add(out.len() as u64, Ordering::Relaxed);
                for sink in &mut sinks {
                    sink.write(&out, ctx)?;
                }
                if output.is_empty() {
                    out.clear();
                } else {
                    output.send(std::mem::take(&mut out))?;
                }
            }
            Received::Barrier(id) => {
                let alignment = inputs.alignment();
                checkpoint::at_operator_barrier(id, &mut *operator, info, alignment, &mut sinks, output, ctx)?;
            }
            Received::Ended => {
                for sink in &mut sinks {
                    sink.finish(ctx)?;
                }
                output.end()?;
                if let Some(handover) = ctx.handover().filter(|_| ctx.barriers().handing_over)
                    && let Some((key_groups, state)) = operator.into_state()
                {
                    handover.put(&info.uid, info.index, key_groups, state);
                }
                return Ok(());
            }
        }
    }
}
