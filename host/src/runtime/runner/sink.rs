//! A sink subtask: [`SinkDriver`] writes, pre-commits and finishes one, counting its events, the
//! same whether it runs in a thread of its own ([`run_sink`]) or chained into the thread of the
//! operator before it. Its failures are reported as its own, under the sink's uid.
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Input, Received, Report, Stop, TaskContext, checkpoint};
use crate::runtime::metrics::{Counters, JobMetrics};
use crate::runtime::{EventBatch, Sink, SinkFactory, SubtaskInfo, TaskError, VertexKind};

/// One sink subtask and what it counts.
pub(crate) struct SinkDriver {
    sink: Box<dyn Sink>,
    info: SubtaskInfo,
    counters: Arc<Counters>,
    metrics: Arc<JobMetrics>,
}

impl SinkDriver {
    /// Opens sink subtask `info` with `factory`.
    pub(crate) fn open(
        factory: &dyn SinkFactory,
        info: SubtaskInfo,
        counters: Arc<Counters>,
        metrics: Arc<JobMetrics>,
        ctx: &dyn TaskContext,
    ) -> Result<Self, Stop> {
        match factory.create(&info) {
            Ok(sink) => Ok(SinkDriver { sink, info, counters, metrics }),
            Err(cause) => Err(failed(ctx, info, cause)),
        }
    }

    /// Writes a batch.
    pub(crate) fn write(&mut self, batch: &EventBatch, ctx: &dyn TaskContext) -> Result<(), Stop> {
        if !batch.is_empty() {
            self.metrics.first_sink_event.get_or_init(crate::runtime::now_ms);
        }
        self.counters.events_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.sink.write(batch).map_err(|cause| failed(ctx, self.info.clone(), cause))?;
        self.counters.events_out.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Its part of barrier `id`.
    pub(crate) fn pre_commit(&mut self, id: u64, alignment: Duration, ctx: &dyn TaskContext) -> Result<(), Stop> {
        checkpoint::at_sink_barrier(&mut *self.sink, &self.info, id, alignment, ctx)
            .map_err(|cause| failed(ctx, self.info.clone(), cause))
    }

    /// Flushes everything once the input has ended.
    pub(crate) fn finish(&mut self, ctx: &dyn TaskContext) -> Result<(), Stop> {
        self.sink.finish().map_err(|cause| failed(ctx, self.info.clone(), cause))
    }
}

/// Reports sink subtask `subtask`'s failure: the cause is the sink's, whichever thread it runs in.
fn failed(ctx: &dyn TaskContext, subtask: SubtaskInfo, cause: String) -> Stop {
    ctx.report(Report::Failed(TaskError { kind: VertexKind::Sink, subtask, cause }));
    Stop::Quiet
}

/// Runs a sink subtask in a thread of its own until its inputs end.
pub(crate) fn run_sink(mut sink: SinkDriver, inputs: &mut dyn Input, ctx: &dyn TaskContext) -> Result<(), Stop> {
    loop {
        match inputs.recv()? {
            Received::Batch(batch, _) => sink.write(&batch, ctx)?,
            Received::Barrier(id) => sink.pre_commit(id, inputs.alignment(), ctx)?,
            // A sink has no timers: event time ends here.
            Received::Time(_) => {}
            Received::Ended => return sink.finish(ctx),
        }
    }
}
