//! A checkpoint or savepoint in progress, collecting its subtasks' acknowledgements (Flink's
//! `PendingCheckpoint`).
use std::sync::Arc;
use std::time::Instant;

use crate::runtime::snapshot::TaskAck;
use crate::runtime::{CheckpointSink, SavepointRequest, SourcePosition, StateFile};

/// A checkpoint or savepoint waiting for acknowledgements.
pub(super) struct Pending {
    pub(super) started: Instant,
    pub(super) sources: Vec<SourcePosition>,
    pub(super) states: Vec<StateFile>,
    acks: usize,
    /// Where it is stored: the job's checkpoint storage, or a savepoint directory.
    pub(super) sink: Arc<dyn CheckpointSink>,
    /// For a savepoint: who asked for it.
    pub(super) savepoint: Option<SavepointRequest>,
}

impl Pending {
    pub(super) fn new(sink: Arc<dyn CheckpointSink>, savepoint: Option<SavepointRequest>) -> Self {
        Pending { started: Instant::now(), sources: Vec::new(), states: Vec::new(), acks: 0, sink, savepoint }
    }

    /// Takes one subtask's acknowledgement in.
    pub(super) fn acknowledge(&mut self, ack: TaskAck) {
        self.acks += 1;
        self.sources.extend(ack.position);
        self.states.extend(ack.states);
    }

    /// Acknowledgements so far.
    pub(super) fn acks(&self) -> usize {
        self.acks
    }

    /// A periodic checkpoint, not a savepoint.
    pub(super) fn is_checkpoint(&self) -> bool {
        self.savepoint.is_none()
    }
}
