//! A subtask's part of a checkpoint once its barrier is aligned, as Flink's
//! `SubtaskCheckpointCoordinator` does it: the synchronous snapshot (or, at the stop of a
//! handover, the state frozen), acknowledged or handed to the uploader; then the sinks'
//! pre-commit, acknowledged with what to commit; then the barrier goes downstream.
use std::time::{Duration, Instant};

use super::{Output, Report, SinkDriver, Stop, TaskContext};
use crate::runtime::checkpoint_stats::SubtaskCheckpoint;
use crate::runtime::snapshot::TaskAck;
use crate::runtime::{Operator, Sink, SubtaskInfo};

/// Operator subtask `info`'s part of barrier `id`, then its chained sinks', then the barrier
/// downstream. Storing the snapshot is the uploader's work: processing goes on meanwhile.
pub(super) fn at_operator_barrier(
    id: u64,
    operator: &mut dyn Operator,
    info: &SubtaskInfo,
    alignment: Duration,
    sinks: &mut [SinkDriver],
    output: &mut dyn Output,
    ctx: &dyn TaskContext,
) -> Result<(), Stop> {
    let _phase = tracing::debug_span!("checkpoint_sync", id, operator = %info.uid, subtask = info.index).entered();
    let started = Instant::now();
    // At the stop of a handover nothing follows on this thread but the end: the state is frozen
    // for the uploader instead of copied.
    let asked = ctx.barriers();
    let handing_over = asked.handing_over && asked.stop_at == id;
    let snapshots = match (handing_over, ctx.handover()) {
        (true, Some(handover)) => operator.freeze(&handover.cuts(&info.uid))?,
        (true, None) => operator.freeze(&[])?,
        (false, _) => operator.snapshot()?,
    };
    let stats = SubtaskCheckpoint { alignment, sync: started.elapsed(), ..Default::default() };
    let ack = TaskAck { stats, ..TaskAck::new(info) };
    ctx.report(match snapshots.is_empty() {
        false => Report::Upload(id, snapshots, ack),
        true => Report::Ack(id, ack),
    });
    for sink in sinks {
        sink.pre_commit(id, alignment, ctx)?;
    }
    Ok(output.barrier(id)?)
}

/// Sink subtask `info`'s part of barrier `id`: pre-commit, then acknowledge with what to commit.
pub(super) fn at_sink_barrier(
    sink: &mut dyn Sink,
    info: &SubtaskInfo,
    id: u64,
    alignment: Duration,
    ctx: &dyn TaskContext,
) -> Result<(), String> {
    let _phase = tracing::debug_span!("checkpoint_pre_commit", id, sink = %info.uid, subtask = info.index).entered();
    let started = Instant::now();
    let committable = sink.pre_commit(id, ctx.lasting(id))?;
    let stats = SubtaskCheckpoint { alignment, sync: started.elapsed(), ..Default::default() };
    ctx.report(Report::Ack(id, TaskAck { stats, committable, ..TaskAck::new(info) }));
    Ok(())
}
