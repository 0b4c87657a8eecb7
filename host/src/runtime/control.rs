//! What every thread of one run shares: the cancel and stop flags, the first failure, what the
//! checkpoint coordinator asks of subtasks, and the channels to it and to the uploader. The
//! subtasks see it as their [`TaskContext`]; the coordinator and the executor use it directly.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::runner::{BarrierRequests, Report, TaskContext};
use super::snapshot::TaskAck;
use super::task::JobFailure;
use super::{CheckpointSink, Handover, StateSnapshot, Wakeup};

/// Shared by every subtask of a run: the first failure, and the flag that stops the sources.
pub(crate) struct Control {
    /// Set from outside to cancel the job.
    pub(crate) cancel: Arc<AtomicBool>,
    /// Set when this attempt fails: it stops this attempt only, not the ones a restart brings.
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) failure: Mutex<Option<JobFailure>>,
    /// The latest checkpoint the coordinator asked the sources for (0: none yet).
    pub(crate) requested: AtomicU64,
    /// The last checkpoint id of earlier runs, where `requested` started.
    pub(crate) before_run: u64,
    /// Align barriers before snapshotting.
    pub(crate) exactly_once: bool,
    /// Acknowledgements to the checkpoint coordinator.
    pub(crate) acks: crossbeam_channel::Sender<Ack>,
    /// Snapshots to the uploader.
    pub(crate) uploads: crossbeam_channel::Sender<Option<Upload>>,
    /// Where each checkpoint or savepoint in progress is stored, by barrier id.
    pub(crate) targets: Mutex<HashMap<u64, Arc<dyn CheckpointSink>>>,
    /// The barriers in progress that must not leave output held back: savepoints (a restore or a
    /// fork starts from them) and a bounded job's final checkpoint.
    pub(crate) lasting: Mutex<std::collections::HashSet<u64>>,
    /// The barrier of a stop-with-savepoint in progress (0: none): sources stop after it.
    pub(crate) stop_at: AtomicU64,
    /// That stop drains: sources send the end of time before its barrier.
    pub(crate) draining: AtomicBool,
    /// Set once the checkpoint or savepoint that ends the job has completed (a final checkpoint
    /// taken after every source finished, a stop's savepoint, or, without checkpoints, the last
    /// source finishing): the waiting sources end then.
    pub(crate) final_checkpoint_done: AtomicBool,
    /// The latest checkpoint that completed (0: none in this run): sources learn of it between
    /// polls, with no wakeup of their own.
    pub(crate) completed: AtomicU64,
    /// Where operators leave their state when the job stops for an upgrade.
    pub(crate) handover: Option<Arc<Handover>>,
    /// Set when the stop's savepoint asked for a handover: ending operators leave their state.
    pub(crate) handing_over: AtomicBool,
    /// What a waiting source wakes up for (a barrier requested, the end reached, a stop called
    /// off, a failure, a cancel): the job's, so that a cancel from outside wakes it too.
    pub(crate) news: Arc<Wakeup>,
    /// Where operators' input is recorded for a trial.
    pub(crate) recent: Arc<super::RecentInput>,
    /// The job's shadow runs.
    pub(crate) shadows: Arc<super::shadow::Shadows>,
}

impl Control {
    pub(crate) fn fail(&self, error: impl Into<JobFailure>) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(error.into());
        }
        self.stop.store(true, Ordering::SeqCst);
        self.announce();
    }

    /// Wakes the sources waiting for news: something they watch changed.
    pub(crate) fn announce(&self) {
        self.news.announce();
    }

    pub(crate) fn ack(&self, ack: Ack) {
        let _ = self.acks.send(ack);
    }

    /// True once the attempt must stop: canceled, or failed.
    pub(crate) fn cancelled(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.cancel.load(Ordering::Relaxed)
    }

    /// Where barrier `id`'s snapshots go, while it is in progress.
    pub(crate) fn target(&self, id: u64) -> Option<Arc<dyn CheckpointSink>> {
        self.targets.lock().ok()?.get(&id).cloned()
    }
}

/// What the checkpoint coordinator hears from subtasks.
pub(crate) enum Ack {
    /// A subtask has done its part of checkpoint n.
    Task(u64, Box<TaskAck>),
    /// A source is exhausted.
    SourceFinished,
    /// Storing a snapshot of checkpoint n failed.
    Failed(u64, String),
    /// Every subtask has stopped.
    JobEnded,
}

impl TaskContext for Control {
    fn barriers(&self) -> BarrierRequests {
        // Read in the reverse order of the coordinator's stores: a barrier seen is one whose
        // stop is seen, and a stop seen is one whose handover flag is.
        let requested = self.requested.load(Ordering::SeqCst);
        let stop_at = self.stop_at.load(Ordering::SeqCst);
        BarrierRequests {
            requested,
            before_run: self.before_run,
            stop_at,
            draining: self.draining.load(Ordering::SeqCst),
            handing_over: self.handing_over.load(Ordering::SeqCst),
            ended: self.final_checkpoint_done.load(Ordering::SeqCst),
            completed: self.completed.load(Ordering::Relaxed),
        }
    }

    fn news_seen(&self) -> u64 {
        self.news.seen()
    }

    fn wait_for_news(&self, seen: u64) {
        self.news.wait(seen)
    }

    fn cancelled(&self) -> bool {
        Control::cancelled(self)
    }

    fn report(&self, report: Report) {
        match report {
            Report::Ack(id, ack) => self.ack(Ack::Task(id, Box::new(ack))),
            Report::Upload(id, snapshots, ack) => {
                let _ = self.uploads.send(Some(Upload { id, snapshots, ack }));
            }
            Report::SourceFinished => self.ack(Ack::SourceFinished),
            Report::Failed(error) => self.fail(error),
        }
    }

    fn handover(&self) -> Option<&Handover> {
        self.handover.as_deref()
    }

    fn lasting(&self, id: u64) -> bool {
        self.lasting.lock().is_ok_and(|lasting| lasting.contains(&id))
    }

    fn recent(&self) -> Option<&super::RecentInput> {
        Some(&self.recent)
    }

    fn shadows(&self) -> Option<&super::shadow::Shadows> {
        Some(&self.shadows)
    }
}

/// A snapshot on its way to storage: the asynchronous part of a checkpoint. `None` on the
/// uploads channel stops the uploader.
pub(crate) struct Upload {
    pub(crate) id: u64,
    /// One per part of the subtask's key groups (see [`StateSnapshot::part`]).
    pub(crate) snapshots: Vec<StateSnapshot>,
    pub(crate) ack: TaskAck,
}
