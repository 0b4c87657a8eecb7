//! What every thread of one run shares: the cancel and stop flags, the first failure, the barrier
//! requested, and the channels to the checkpoint coordinator and the uploader.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::JobFailure;
use crate::runtime::checkpoint_stats::SubtaskCheckpoint;
use crate::runtime::{CheckpointSink, Handover, SourcePosition, StateFile, StateSnapshot, SubtaskInfo};

/// Shared by every subtask of a run: the first failure, and the flag that stops the sources.
pub(super) struct Control {
    /// Set from outside to cancel the job.
    pub(super) cancel: Arc<AtomicBool>,
    /// Set when this attempt fails: it stops this attempt only, not the ones a restart brings.
    pub(super) stop: Arc<AtomicBool>,
    pub(super) failure: Mutex<Option<JobFailure>>,
    /// The latest checkpoint the coordinator asked the sources for (0: none yet).
    pub(super) requested: AtomicU64,
    /// Align barriers before snapshotting.
    pub(super) exactly_once: bool,
    /// Periodic checkpoints are on: exhausted sources wait for a final checkpoint.
    pub(super) checkpointing: bool,
    /// Acknowledgements to the checkpoint coordinator.
    pub(super) acks: crossbeam_channel::Sender<Ack>,
    /// Snapshots to the uploader.
    pub(super) uploads: crossbeam_channel::Sender<Option<Upload>>,
    /// Where each checkpoint or savepoint in progress is stored, by barrier id.
    pub(super) targets: Mutex<HashMap<u64, Arc<dyn CheckpointSink>>>,
    /// The barrier of a stop-with-savepoint in progress (0: none): sources stop after it.
    pub(super) stop_at: AtomicU64,
    /// Set once the checkpoint or savepoint that ends the job has completed (a final checkpoint
    /// taken after every source finished, or a stop's savepoint): the waiting sources end then.
    pub(super) final_checkpoint_done: AtomicBool,
    /// Where operators leave their state when the job stops for an upgrade.
    pub(super) handover: Option<Arc<Handover>>,
    /// Set when the stop's savepoint asked for a handover: ending operators leave their state.
    pub(super) handing_over: AtomicBool,
    /// Counts what a waiting source wakes up for (a barrier requested, the end reached, a stop
    /// called off, a failure), with the condition it waits on.
    pub(super) news: (Mutex<u64>, std::sync::Condvar),
}

impl Control {
    pub(super) fn fail(&self, error: impl Into<JobFailure>) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(error.into());
        }
        self.stop.store(true, Ordering::SeqCst);
        self.announce();
    }

    /// Wakes the sources waiting in [`Control::wait_for_news`]: something they watch changed.
    pub(super) fn announce(&self) {
        let (count, changed) = &self.news;
        *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        changed.notify_all();
    }

    /// What [`Control::announce`] has counted so far: read it before checking, then wait with it.
    pub(super) fn news_seen(&self) -> u64 {
        *self.news.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until something is announced after `seen`, or `timeout` (a cancel from outside is
    /// not announced: it is seen at the timeout).
    pub(super) fn wait_for_news(&self, seen: u64, timeout: std::time::Duration) {
        let (count, changed) = &self.news;
        let count = count.lock().unwrap_or_else(|e| e.into_inner());
        let _ = changed.wait_timeout_while(count, timeout, |count| *count == seen);
    }

    pub(super) fn ack(&self, ack: Ack) {
        let _ = self.acks.send(ack);
    }

    /// True once the attempt must stop: canceled, or failed.
    pub(super) fn cancelled(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.cancel.load(Ordering::Relaxed)
    }

    /// Where barrier `id`'s snapshots go, while it is in progress.
    pub(super) fn target(&self, id: u64) -> Option<Arc<dyn CheckpointSink>> {
        self.targets.lock().ok()?.get(&id).cloned()
    }
}

/// One subtask's acknowledgement of a checkpoint.
pub(super) struct TaskAck {
    pub(super) uid: Arc<str>,
    pub(super) subtask: u32,
    /// Sources: where they resume.
    pub(super) position: Option<SourcePosition>,
    /// Operators with state: the stored snapshot.
    pub(super) state: Option<StateFile>,
    /// Timings and size, for the statistics.
    pub(super) stats: SubtaskCheckpoint,
}

impl TaskAck {
    pub(super) fn new(info: &SubtaskInfo) -> Self {
        TaskAck { uid: info.uid.clone(), subtask: info.index, position: None, state: None, stats: Default::default() }
    }
}

/// What the checkpoint coordinator hears from subtasks.
pub(super) enum Ack {
    /// A subtask has done its part of checkpoint n.
    Task(u64, TaskAck),
    /// A source is exhausted.
    SourceFinished,
    /// Storing a snapshot of checkpoint n failed.
    Failed(u64, String),
    /// Every subtask has stopped.
    JobEnded,
}

/// A snapshot on its way to storage: the asynchronous part of a checkpoint. `None` on the
/// uploads channel stops the uploader.
pub(super) struct Upload {
    pub(super) id: u64,
    pub(super) snapshot: StateSnapshot,
    pub(super) ack: TaskAck,
}
