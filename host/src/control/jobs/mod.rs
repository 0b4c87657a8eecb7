//! The job registry: every job a server (or `weir run`) started, its state and its live counts.
//! Each job runs on its own thread (the executor's subtasks on theirs) and is persisted as
//! `<data-dir>/jobs/<id>.json` whenever its state changes.
//!
//! By role: [`record`] is what is recorded and shown, [`errors`] why requests are refused,
//! [`lifecycle`] the run loop, [`upgrade`] swaps and rollbacks, [`savepoints`] savepoints asked
//! of a job, [`trial`] and [`shadow`] new modules tried beside the running ones, [`recovery`] resuming jobs after a restart, [`store`] persistence; this file is the
//! registry itself: opening it, submitting, starting and canceling jobs, and reading them.
mod canary;
mod errors;
mod lifecycle;
mod record;
mod recovery;
mod savepoints;
mod shadow;
mod store;
mod trial;
mod upgrade;

pub use canary::{CanaryAbort, CanaryStep};
pub use errors::{CancelError, DisposeError, SavepointError, SubmitError, UpgradeError};
pub use record::*;
pub use shadow::SHADOW_MEMORY_LIMIT;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
pub use trial::{TRIAL_SAMPLE, TrialReport};

use sha2::{Digest, Sha256};

use crate::checkpoint::Restore;
use crate::control::lock;
use crate::job::{JobPlan, Modules, Placement};
use crate::runtime::checkpoint_stats::CheckpointStats;
use crate::runtime::now_ms;
use crate::runtime::{self, JobGraph, RunHandles, SavepointRequest};
use lifecycle::run_attempts;
use store::update;
use upgrade::{PendingUpgrade, Swap, UpgradeProgress};

struct Job {
    info: Mutex<JobInfo>,
    /// Signalled, under `info`'s lock, when the record changes or a cancel is asked for: waiting
    /// for a job's end or a restart delay needs no polling.
    changed: std::sync::Condvar,
    /// What every run of the job is handed: the cancel flag, the metrics, the savepoint requests
    /// (each run's coordinator takes them) and the handover of state between runs.
    handles: RunHandles,
    /// Where savepoints are asked of the running job.
    savepoint_requests: crossbeam_channel::Sender<SavepointRequest>,
    /// What the running job was built from; none once it ended (or before it started).
    plan: Mutex<Option<Arc<JobPlan>>>,
    /// Savepoints asked for, by trigger id.
    triggers: Mutex<BTreeMap<String, SavepointStatus>>,
    /// The upgrade whose stop-with-savepoint is under way.
    upgrade: Mutex<Option<PendingUpgrade>>,
    /// Upgrades asked for, by request id.
    upgrades: Mutex<BTreeMap<String, UpgradeProgress>>,
    /// The last upgrade, until it is rolled back.
    swap: Mutex<Option<Swap>>,
    /// While it runs a canary: where the canary started.
    canary_start: Mutex<Option<canary::CanaryStart>>,
}

impl Job {
    /// Hands `request` to the job's runs, unless the job has ended. Checked under the record's
    /// lock, under which the run loop records the end before it answers the requests left in
    /// the channel: a request either reaches a run or is answered, never left waiting.
    fn request_savepoint(&self, request: SavepointRequest) -> Result<(), SavepointRequest> {
        let info = lock(&self.info);
        if info.state.is_terminal() {
            return Err(request);
        }
        // The receiver lives as long as the job: the send cannot fail.
        let _ = self.savepoint_requests.send(request);
        Ok(())
    }

    fn new(info: JobInfo) -> Job {
        let (savepoint_requests, savepoints) = crossbeam_channel::unbounded();
        let metrics = Arc::new(crate::runtime::JobMetrics::default());
        metrics.carry_over(&info.vertices);
        let handles = RunHandles {
            cancel: Arc::default(),
            metrics,
            savepoints,
            handover: Arc::default(),
            wakeup: Arc::default(),
            recent: Arc::default(),
            shadows: Arc::default(),
        };
        Job {
            info: Mutex::new(info),
            changed: std::sync::Condvar::new(),
            handles,
            savepoint_requests,
            plan: Mutex::new(None),
            triggers: Mutex::default(),
            upgrade: Mutex::default(),
            upgrades: Mutex::default(),
            swap: Mutex::default(),
            canary_start: Mutex::default(),
        }
    }

    /// The job is over: nothing can upgrade or roll it back now, and the plans it held go (with
    /// them, the directories it claimed).
    fn release(&self) {
        self.handles.shadows.stop_all("the job ended");
        *lock(&self.plan) = None;
        lock(&self.swap).take();
        lock(&self.canary_start).take();
        lock(&self.upgrade).take();
    }
}

/// Every job of this server.
pub struct Jobs {
    /// Where records are persisted; none for `weir run`'s single job.
    dir: Option<PathBuf>,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    sequence: AtomicU64,
    /// Jobs that were running when the previous server stopped, not yet resumed.
    interrupted: Mutex<Vec<String>>,
    /// Where its jobs may read and write, and their default checkpoint and savepoint places.
    placement: Arc<Placement>,
}

impl Jobs {
    /// A registry persisting under `dir`, with the jobs recorded there. Jobs that were running when
    /// the previous server stopped are kept aside for [`Jobs::resume_interrupted`].
    /// Its jobs' files go where `placement` says.
    pub fn open(dir: Option<PathBuf>, placement: Placement) -> std::io::Result<Self> {
        let mut jobs = BTreeMap::new();
        let mut interrupted = Vec::new();
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
            for entry in std::fs::read_dir(dir)?.flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let Ok(Ok(info)) = std::fs::read(&path).map(|b| serde_json::from_slice::<JobInfo>(&b)) else {
                    tracing::warn!("ignoring unreadable job record {}", path.display());
                    continue;
                };
                if !info.state.is_terminal() {
                    interrupted.push(info.id.clone());
                }
                jobs.insert(info.id.clone(), Arc::new(Job::new(info)));
            }
        }
        let interrupted = Mutex::new(interrupted);
        let placement = Arc::new(placement);
        Ok(Jobs { dir, jobs: Mutex::new(jobs), sequence: AtomicU64::new(0), interrupted, placement })
    }

    /// Parses, checks and starts a submitted job, from a savepoint if `from` names one.
    /// Relative paths start at `base`.
    pub fn submit(
        &self,
        text: &str,
        modules: &mut dyn Modules,
        base: &Path,
        from: Option<&StartFrom>,
    ) -> Result<JobInfo, SubmitError> {
        let plan = JobPlan::new(text.to_string(), "submitted job", base, modules, self.placement.clone())?;
        let restore = match from {
            Some(from) => {
                let allowed = &self.placement.allowed;
                allowed.check_url("from-savepoint", &from.savepoint, base).map_err(SubmitError::Savepoint)?;
                let restore =
                    Restore::savepoint(&from.savepoint, base).map_err(SubmitError::Savepoint)?.forked(from.fork);
                if from.fork {
                    restore.check_fork(plan.name()).map_err(SubmitError::Savepoint)?;
                }
                Some(Arc::new(restore.allowing_non_restored_state(from.allow_non_restored_state)))
            }
            None => None,
        };
        // A canary the savepoint holds goes on.
        let adopted = restore.as_ref().map(|r| plan.with_restored_canaries(r, modules)).transpose();
        let plan = adopted.map_err(SubmitError::Savepoint)?.flatten().unwrap_or(plan);
        let graph = plan.build(0, restore.clone())?;
        Ok(self.start(plan, graph, restore))
    }

    /// Starts a job's first attempt (resuming from `restore`, if given) and returns its record.
    pub fn start(&self, plan: JobPlan, graph: JobGraph, restore: Option<Arc<Restore>>) -> JobInfo {
        let info = JobInfo {
            id: plan.id().to_string(),
            name: plan.name().to_string(),
            state: JobState::Created,
            submitted_at: now_ms(),
            first_event_at: None,
            ended_at: None,
            failure: None,
            attempt: 0,
            failures: Vec::new(),
            guest_traps: 0,
            first_checkpoint: 0,
            savepoints: Vec::new(),
            rollback_point: None,
            canary_start: None,
            lineage: restore.as_ref().filter(|r| r.is_savepoint()).map(|r| Lineage {
                savepoint: r.location(),
                job: r.job().to_string(),
                savepoint_id: r.id(),
                fork: r.is_fork(),
            }),
            history: vec![HistoryEntry::new(
                HistoryEvent::Started,
                &plan,
                restore.as_ref().filter(|r| r.is_savepoint()).map(|r| r.location()),
                None,
            )],
            vertices: Vec::new(),
            shadows: Vec::new(),
            job: plan.text().to_string(),
        };
        let job = Arc::new(Job::new(info.clone()));
        lock(&self.jobs).insert(info.id.clone(), job.clone());
        self.launch(job.clone(), plan, graph, restore);
        self.info(&job)
    }

    /// Runs a job on its own thread: attempt after attempt, as its restart strategy allows.
    fn launch(&self, job: Arc<Job>, plan: JobPlan, graph: JobGraph, restore: Option<Arc<Restore>>) {
        if let Some(restore) = &restore {
            job.handles.metrics.checkpoint_stats(|s| s.restored(restore.stats()));
        }
        let own_first = graph.checkpointing.as_ref().map_or(0, |c| c.first_id);
        self.update(&job, |i| {
            i.state = JobState::Running;
            i.attempt = graph.attempt;
            i.first_checkpoint = restore.as_ref().map_or(own_first, |r| r.id());
        });
        // A restart before the run's first checkpoint goes back to the savepoint it started from.
        let start = restore.filter(|r| r.is_savepoint());
        let plan = Arc::new(plan);
        *lock(&job.plan) = Some(plan.clone());
        let (dir, runner) = (self.dir.clone(), job.clone());
        let spawned = std::thread::Builder::new().name(format!("job-{}", &lock(&job.info).id[..8])).spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| run_attempts(dir.as_deref(), &runner, plan, graph, start));
            // A panic here is a weir bug: the job fails with it rather than stay running forever.
            if let Err(payload) = std::panic::catch_unwind(run) {
                let message = runtime::panic_message(&*payload);
                runner.release();
                update(dir.as_deref(), &runner, |i| {
                    i.state = JobState::Failed;
                    i.ended_at = Some(now_ms());
                    i.failure = Some(format!(
                        "internal error: the job's thread panicked ({message}); please report this as a weir bug"
                    ));
                });
            }
        });
        if let Err(e) = spawned {
            self.update(&job, |i| {
                i.state = JobState::Failed;
                i.failure = Some(format!("cannot start the job's thread: {e}"));
            });
        }
    }

    /// Running job `id` and what it was built from, to `action`; refused for an unknown or ended
    /// job.
    fn running(&self, id: &str, action: &'static str) -> Result<(Arc<Job>, Arc<JobPlan>), SavepointError> {
        let job = lock(&self.jobs).get(id).cloned().ok_or_else(|| SavepointError::NotFound(id.to_string()))?;
        let state = lock(&job.info).state;
        let plan = lock(&job.plan).clone();
        match plan {
            Some(plan) if state == JobState::Running => Ok((job, plan)),
            // Between the end of its run (its plan released) and its state saying how it ended.
            None if state == JobState::Running => Err(SavepointError::Ending { id: id.to_string(), action }),
            _ => Err(SavepointError::NotRunning { id: id.to_string(), state, action }),
        }
    }

    /// A new id for a savepoint or upgrade request of job `id`: 16 hex digits.
    fn request_id(&self, id: &str) -> String {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        hex::encode(&Sha256::digest(format!("{id}/{sequence}/{}", now_ms()))[..8])
    }

    /// The checkpoint statistics of a job, if there is such a job.
    pub fn checkpoints(&self, id: &str) -> Option<CheckpointStats> {
        let job = lock(&self.jobs).get(id).cloned()?;
        Some(job.handles.metrics.checkpoints())
    }

    /// The job's record with its live counts, if there is such a job.
    pub fn get(&self, id: &str) -> Option<JobInfo> {
        let job = lock(&self.jobs).get(id).cloned()?;
        Some(self.info(&job))
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobInfo> {
        let jobs: Vec<Arc<Job>> = lock(&self.jobs).values().cloned().collect();
        let mut infos: Vec<JobInfo> = jobs.iter().map(|j| self.info(j)).collect();
        infos.sort_by(|a, b| (a.submitted_at, &a.id).cmp(&(b.submitted_at, &b.id)));
        infos
    }

    /// The jobs running each stored module, by the module's SHA-256.
    pub fn module_users(&self) -> BTreeMap<String, Vec<String>> {
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, job) in lock(&self.jobs).iter() {
            let Some(plan) = lock(&job.plan).clone() else { continue };
            for sha256 in plan.module_digests() {
                users.entry(sha256).or_default().push(id.clone());
            }
        }
        users
    }

    /// Asks a running job to stop; it becomes `canceled` once its subtasks have stopped.
    pub fn cancel(&self, id: &str) -> Result<JobInfo, CancelError> {
        let job = lock(&self.jobs).get(id).cloned().ok_or_else(|| CancelError::NotFound(id.to_string()))?;
        let state = lock(&job.info).state;
        if state.is_terminal() {
            return Err(CancelError::Ended { id: id.to_string(), state });
        }
        job.handles.cancel();
        // Under the record's lock, so that a waiter checks the flag before or after, never between.
        drop(lock(&job.info));
        job.changed.notify_all();
        Ok(self.info(&job))
    }

    /// Waits until job `id` has ended and returns its record; `None` for an unknown job.
    pub fn wait_until_ended(&self, id: &str) -> Option<JobInfo> {
        let job = lock(&self.jobs).get(id).cloned()?;
        let mut info = lock(&job.info);
        while !info.state.is_terminal() {
            info = job.changed.wait(info).unwrap_or_else(|e| e.into_inner());
        }
        drop(info);
        Some(self.info(&job))
    }

    fn info(&self, job: &Job) -> JobInfo {
        self.record_pauses(job);
        let mut info = lock(&job.info).clone();
        info.shadows = job.handles.shadows.reports();
        if !info.state.is_terminal() {
            info.vertices = job.handles.metrics.snapshot();
            info.first_event_at = job.handles.metrics.first_sink_event_at();
        }
        info
    }

    fn update(&self, job: &Job, change: impl FnOnce(&mut JobInfo)) {
        update(self.dir.as_deref(), job, change);
    }
}
