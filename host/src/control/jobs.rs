//! The job registry: every job a server (or `weir run`) started, its state and its live counts.
//! Each job runs on its own thread (the executor's subtasks on theirs) and is persisted as
//! `<data-dir>/jobs/<id>.json` whenever its state changes.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{lock, write_atomically};
use crate::checkpoint::Restore;
use crate::checkpoint::savepoint::SavepointSink;
use crate::job::restart::{RestartStrategy, Restarts};
use crate::job::{JobError, JobPlan, Modules, Placement};
use crate::runtime::checkpoint_stats::CheckpointStats;
use crate::runtime::now_ms;
use crate::runtime::{self, Handover, JobFailure, JobGraph, JobMetrics, SavepointRequest, VertexSummary};

/// A job's state, in Flink's words. (Flink's `failing`, the moment between a failure and the
/// end of the attempt's tasks, lasts only as long as joining threads here, so it is not shown.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Accepted, subtasks not started yet.
    Created,
    /// Subtasks are running.
    Running,
    /// An attempt failed; the next one starts after the restart strategy's delay.
    Restarting,
    /// Bounded sources ended and every event reached the sinks.
    Finished,
    /// Stopped by a cancel request.
    Canceled,
    /// Stopped by a failure; `failure` says which subtask and why.
    Failed,
}

impl JobState {
    /// True once the job can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Finished | JobState::Canceled | JobState::Failed)
    }
}

/// What the API shows of a job, and what is persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobInfo {
    /// 32 hex digits.
    pub id: String,
    /// The job file's `name`.
    pub name: String,
    /// Lifecycle state.
    pub state: JobState,
    /// Milliseconds since the Unix epoch.
    pub submitted_at: u64,
    /// When the first event reached a sink.
    pub first_event_at: Option<u64>,
    /// When the job reached a terminal state.
    pub ended_at: Option<u64>,
    /// Why the job failed.
    pub failure: Option<String>,
    /// The current attempt, from 0: each restart adds one.
    #[serde(default)]
    pub attempt: u32,
    /// The failures that made it restart (or fail), oldest first, at most [`FAILURE_HISTORY`].
    #[serde(default)]
    pub failures: Vec<FailureRecord>,
    /// The oldest checkpoint a restart may resume from: the one the job started from, or else
    /// its own first. Older checkpoints under the job's name belong to earlier runs.
    #[serde(default)]
    pub first_checkpoint: u64,
    /// Its completed savepoints, oldest first.
    #[serde(default)]
    pub savepoints: Vec<SavepointRecord>,
    /// The code it ran over time: submitted, then each upgrade and rollback, oldest first.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// For a job started from a savepoint (a fork, or a restore): which savepoint of which job.
    #[serde(default)]
    pub lineage: Option<Lineage>,
    /// While the job runs after an upgrade: what rolling it back by hand goes back to (kept in
    /// the record, so that a restarted server can still roll it back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_point: Option<RollbackPoint>,
    /// Per vertex (sources, operators, sinks), events in and out per subtask.
    pub vertices: Vec<VertexSummary>,
    /// The job file as submitted.
    pub job: String,
}

/// The savepoint a submitted job starts from.
pub struct StartFrom {
    /// Its path or URL.
    pub savepoint: String,
    /// Start even if some of its state has nowhere to go.
    pub allow_non_restored_state: bool,
    /// The job is a fork: a new job beside the one the savepoint was taken of.
    pub fork: bool,
}

/// Where a job started from a savepoint comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Lineage {
    /// The savepoint.
    pub savepoint: String,
    /// The job it was taken of.
    pub job: String,
    /// Its barrier id in that job.
    pub savepoint_id: u64,
}

/// What a rollback of a job's last upgrade goes back to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RollbackPoint {
    /// The job file as it ran before the upgrade.
    pub job: String,
    /// The savepoint taken before the swap.
    pub savepoint: String,
}

/// What changed the code a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HistoryEvent {
    /// It started (submitted, run, or started from a savepoint).
    Started,
    /// An upgrade swapped modules.
    Upgraded,
    /// An upgrade was rolled back.
    RolledBack,
}

/// One entry of a job's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HistoryEntry {
    /// When, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// What happened.
    pub event: HistoryEvent,
    /// Each operator's uid and the code it runs from then on.
    pub modules: Vec<(String, String)>,
    /// The savepoint between this code and the code before (an upgrade's), or the one the job
    /// started from.
    pub savepoint: Option<String>,
    /// For a rollback: why.
    pub cause: Option<String>,
}

impl HistoryEntry {
    fn new(event: HistoryEvent, plan: &JobPlan, savepoint: Option<String>, cause: Option<String>) -> Self {
        HistoryEntry { timestamp: now_ms(), event, modules: plan.operator_codes(), savepoint, cause }
    }
}

/// Failures kept in a job's record.
pub const FAILURE_HISTORY: usize = 16;

/// One failed attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureRecord {
    /// When, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// The attempt that failed.
    pub attempt: u32,
    /// Which subtask failed and why.
    pub cause: String,
}

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The job file is invalid or names unusable modules.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The savepoint to start from cannot be used.
    #[error("{0}")]
    Savepoint(String),
}

/// Why a job cannot be canceled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No job has this id.
    #[error("no job with id {0}")]
    NotFound(String),
    /// The job already ended.
    #[error("job {id} is already {state:?}; only a created or running job can be canceled")]
    Ended {
        /// The job.
        id: String,
        /// Its terminal state.
        state: JobState,
    },
}

struct Job {
    info: Mutex<JobInfo>,
    cancel: Arc<AtomicBool>,
    metrics: Arc<JobMetrics>,
    /// What the running job was built from; none once it ended (or before it started).
    plan: Mutex<Option<Arc<JobPlan>>>,
    /// Savepoints asked of the running job: each attempt's coordinator takes them.
    savepoint_requests: (crossbeam_channel::Sender<SavepointRequest>, crossbeam_channel::Receiver<SavepointRequest>),
    /// Savepoints asked for, by trigger id.
    triggers: Mutex<BTreeMap<String, SavepointStatus>>,
    /// Where operators leave their state when the job stops for an upgrade.
    handover: Arc<Handover>,
    /// The upgrade whose stop-with-savepoint is under way.
    upgrade: Mutex<Option<PendingUpgrade>>,
    /// Upgrades asked for, by request id.
    upgrades: Mutex<BTreeMap<String, UpgradeProgress>>,
    /// The last upgrade, until it is rolled back.
    last_swap: Mutex<Option<LastSwap>>,
}

/// An upgrade waiting for the job to stop at its savepoint.
struct PendingUpgrade {
    /// Its request id.
    request: String,
    /// The job with the new modules (for a rollback, as it ran before the last upgrade).
    plan: Arc<JobPlan>,
    /// The savepoint the job stops at (kept for rollback).
    sink: Arc<SavepointSink>,
    /// The operators whose module changes.
    uids: Vec<String>,
    /// For a rollback by hand: the savepoint of the last upgrade, to go on from.
    rollback: Option<Arc<Restore>>,
}

/// The last upgrade of a job, for a rollback by hand: the job as it ran before, and the
/// savepoint taken before the swap.
struct LastSwap {
    previous: Arc<JobPlan>,
    savepoint: SwapSavepoint,
}

/// The savepoint of an upgrade.
enum SwapSavepoint {
    /// Taken by this process (perhaps still being stored).
    Taken(Arc<SavepointSink>),
    /// Recorded in the job's record by an earlier server: its location.
    Recorded(String),
}

impl SwapSavepoint {
    /// The savepoint to roll back from, once stored.
    fn restore(&self) -> Result<Restore, String> {
        match self {
            SwapSavepoint::Taken(sink) => sink.stored(),
            SwapSavepoint::Recorded(location) => Restore::savepoint(location, Path::new(".")),
        }
    }
}

/// Where an upgrade stands, as the job thread records it.
enum UpgradeProgress {
    InProgress,
    /// The new code runs; the pause is known once each upgraded operator has processed a batch.
    Restarted {
        savepoint: String,
        /// The run of the job's graph with the new code (see `JobMetrics::runs`).
        run: u64,
        /// Per upgraded operator, when the old code processed its last batch (`clock_ns`).
        last_batches: Vec<(String, u64)>,
    },
    Failed {
        cause: String,
    },
    RolledBack {
        savepoint: String,
        cause: String,
    },
}

/// The latest swap of a running job, while a failure may still roll it back.
struct Swap {
    /// Its request id.
    request: String,
    /// The job as it ran before.
    previous: Arc<JobPlan>,
    /// The savepoint taken before the swap (perhaps still being stored).
    sink: Arc<SavepointSink>,
    /// When the new modules started.
    at: Instant,
    /// The operators whose module changed.
    uids: Vec<String>,
}

/// Where an upgrade stands.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", rename_all_fields = "kebab-case", tag = "status")]
pub enum UpgradeStatus {
    /// Stopping at its savepoint, or restarting.
    InProgress,
    /// The new modules run.
    Completed {
        /// The savepoint taken before the swap (for a rollback).
        savepoint: String,
        /// From the last batch the old modules processed to the first the new ones did, in
        /// milliseconds (the longest over the upgraded operators).
        pause_ms: f64,
    },
    /// Refused or failed; the job runs the modules it ran before.
    Failed {
        /// Why.
        cause: String,
    },
    /// The new modules failed right after the swap: the job went back to the modules it ran
    /// before, from the savepoint taken before the swap.
    RolledBack {
        /// That savepoint.
        savepoint: String,
        /// Why the new modules failed.
        cause: String,
    },
}

impl Job {
    fn new(info: JobInfo) -> Job {
        Job {
            info: Mutex::new(info),
            cancel: Arc::default(),
            metrics: Arc::default(),
            plan: Mutex::new(None),
            savepoint_requests: crossbeam_channel::unbounded(),
            triggers: Mutex::default(),
            handover: Arc::default(),
            upgrade: Mutex::default(),
            upgrades: Mutex::default(),
            last_swap: Mutex::default(),
        }
    }
}

/// Where a savepoint asked for stands.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum SavepointStatus {
    /// Its barrier is on its way.
    InProgress,
    /// Stored.
    Completed {
        /// Where: a local path, or a URL.
        location: String,
    },
    /// Not stored; the job goes on (a stop is called off).
    Failed {
        /// Why.
        cause: String,
    },
}

/// A completed savepoint, as the job's record keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SavepointRecord {
    /// Where: a local path, or a URL.
    pub location: String,
    /// The job it was taken of.
    pub job_id: String,
    /// The job's name.
    pub job_name: String,
    /// Milliseconds since the Unix epoch.
    pub taken_at: u64,
    /// Bytes of state.
    pub size: u64,
    /// Whether it stopped the job.
    pub stopped: bool,
    /// Each operator's uid and code.
    pub operators: Vec<(String, String)>,
}

/// Why a savepoint cannot be asked for.
#[derive(Debug, thiserror::Error)]
pub enum SavepointError {
    /// No job has this id.
    #[error("no job with id {0}")]
    NotFound(String),
    /// The job is not running.
    #[error("job {id} is {state:?}; only a running job can {action}")]
    NotRunning {
        /// The job.
        id: String,
        /// Its state.
        state: JobState,
        /// What was asked: "take a savepoint", "be upgraded", "be rolled back".
        action: &'static str,
    },
    /// The savepoint directory cannot be used.
    #[error("{0}")]
    Target(String),
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

    /// Resumes the jobs that were running when the previous server stopped, each from its latest
    /// checkpoint (or from the start, when it had none yet). A job without checkpointing cannot
    /// be resumed without repeating its output, so it is marked failed, saying so.
    pub fn resume_interrupted(&self, modules: &mut dyn Modules, base: &Path) {
        let ids = std::mem::take(&mut *lock(&self.interrupted));
        for id in ids {
            let Some(job) = lock(&self.jobs).get(&id).cloned() else { continue };
            let text = lock(&job.info).job.clone();
            let placement = self.placement.clone();
            let resumed = JobPlan::new(text, "resumed job", base, modules, placement)
                .map_err(|e| e.to_string())
                .and_then(|plan| {
                    let plan = plan.with_id(&id);
                    if plan.checkpoint_storage().is_none() {
                        return Err("it has no [checkpointing], so it cannot be resumed without repeating its output"
                            .to_string());
                    }
                    // Read first: a guard in a `match` scrutinee lives through the whole match.
                    let (first_checkpoint, lineage, attempt) = {
                        let info = lock(&job.info);
                        (info.first_checkpoint, info.lineage.clone(), info.attempt + 1)
                    };
                    let restore = match plan.latest_checkpoint(first_checkpoint)? {
                        Some(checkpoint) => Some(Arc::new(checkpoint)),
                        // Started from a savepoint and no checkpoint since: from that savepoint.
                        None => match lineage {
                            Some(lineage) => Some(Arc::new(Restore::savepoint(&lineage.savepoint, base)?)),
                            None => None,
                        },
                    };
                    let graph = plan.build(attempt, restore.clone()).map_err(|e| e.to_string())?;
                    Ok((plan, graph, restore))
                });
            match resumed {
                Ok((plan, graph, restore)) => {
                    let from = restore.as_ref().map_or("the start".to_string(), |r| format!("checkpoint {}", r.id()));
                    tracing::info!("resuming job {id} ('{}') from {from}", plan.name());
                    // Its last upgrade can still be rolled back by hand.
                    let rollback_point = lock(&job.info).rollback_point.clone();
                    if let Some(point) = rollback_point {
                        match plan.sibling(point.job, modules) {
                            Ok(previous) => {
                                let savepoint = SwapSavepoint::Recorded(point.savepoint);
                                *lock(&job.last_swap) = Some(LastSwap { previous: Arc::new(previous), savepoint });
                            }
                            Err(e) => tracing::warn!("job {id}: its last upgrade can no longer be rolled back: {e}"),
                        }
                    }
                    self.launch(job, plan, graph, restore);
                }
                Err(cause) => self.update(&job, |i| {
                    i.state = JobState::Failed;
                    i.ended_at = Some(now_ms());
                    i.failure = Some(format!("the server stopped while the job was running; {cause}"));
                }),
            }
        }
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
                let restore = Restore::savepoint(&from.savepoint, base).map_err(SubmitError::Savepoint)?;
                if from.fork {
                    restore.check_fork(plan.name()).map_err(SubmitError::Savepoint)?;
                }
                Some(Arc::new(restore.allowing_non_restored_state(from.allow_non_restored_state)))
            }
            None => None,
        };
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
            first_checkpoint: 0,
            savepoints: Vec::new(),
            rollback_point: None,
            lineage: restore.as_ref().filter(|r| r.is_savepoint()).map(|r| Lineage {
                savepoint: r.location(),
                job: r.job().to_string(),
                savepoint_id: r.id(),
            }),
            history: vec![HistoryEntry::new(
                HistoryEvent::Started,
                &plan,
                restore.as_ref().filter(|r| r.is_savepoint()).map(|r| r.location()),
                None,
            )],
            vertices: Vec::new(),
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
            job.metrics.checkpoint_stats(|s| s.restored(restore.stats()));
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
                *lock(&runner.plan) = None;
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
        let plan = lock(&job.plan).clone().filter(|_| state == JobState::Running);
        let Some(plan) = plan else { return Err(SavepointError::NotRunning { id: id.to_string(), state, action }) };
        Ok((job, plan))
    }

    /// A new id for a savepoint or upgrade request of job `id`: 16 hex digits.
    fn request_id(&self, id: &str) -> String {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        hex::encode(&Sha256::digest(format!("{id}/{sequence}/{}", now_ms()))[..8])
    }

    /// Asks running job `id` for a savepoint into `dir` (else the job's savepoint directory);
    /// with `stop`, the job then stops (stop-with-savepoint). Returns the trigger id to ask
    /// [`Jobs::savepoint_status`] with.
    pub fn savepoint(&self, id: &str, dir: Option<&str>, stop: bool) -> Result<String, SavepointError> {
        let (job, plan) = self.running(id, "take a savepoint")?;
        let sink = Arc::new(plan.savepoint_sink(dir).map_err(SavepointError::Target)?);
        let trigger = self.request_id(id);
        lock(&job.triggers).insert(trigger.clone(), SavepointStatus::InProgress);
        let (runner, dir, key, written) = (job.clone(), self.dir.clone(), trigger.clone(), sink.clone());
        let done = Box::new(move |result: Result<u64, String>| {
            let status = match result {
                Ok(_) => {
                    let location = written.location();
                    if let Some(m) = written.metadata() {
                        update(dir.as_deref(), &runner, |i| {
                            i.savepoints.push(SavepointRecord {
                                location: location.clone(),
                                job_id: i.id.clone(),
                                job_name: i.name.clone(),
                                taken_at: m.taken_at,
                                size: m.size(),
                                stopped: stop,
                                operators: m.operators.iter().map(|o| (o.uid.clone(), o.module.to_string())).collect(),
                            })
                        });
                    }
                    SavepointStatus::Completed { location }
                }
                Err(cause) => SavepointStatus::Failed { cause },
            };
            lock(&runner.triggers).insert(key, status);
        });
        let request = SavepointRequest { sink, stop, handover: false, done };
        if job.savepoint_requests.0.send(request).is_err() {
            lock(&job.triggers).insert(trigger.clone(), SavepointStatus::Failed { cause: "the job ended".into() });
        }
        Ok(trigger)
    }

    /// Replaces the modules of running job `id`'s operators, `(uid, module reference)` each, with
    /// modules resolved by `modules`: the new modules are loaded and checked against the state of
    /// the ones they replace while the job runs; then the job stops at a savepoint (kept for a
    /// rollback) and goes on with the new modules, each operator's state handed over in place.
    /// Returns the request id to ask [`Jobs::upgrade_status`] with.
    pub fn upgrade(
        &self,
        id: &str,
        replacements: &[(String, String)],
        modules: &mut dyn Modules,
    ) -> Result<String, SavepointError> {
        let (job, plan) = self.running(id, "be upgraded")?;
        let upgraded = Arc::new(plan.upgraded(replacements, modules).map_err(SavepointError::Target)?);
        let uids = replacements.iter().map(|(uid, _)| uid.clone()).collect();
        self.stop_for(&job, id, &plan, upgraded, uids, None)
    }

    /// Goes back from running job `id`'s last upgrade: the job stops at a savepoint and goes on
    /// with the modules it ran before, from the savepoint taken before that upgrade (its output
    /// since is written again; exactly-once holds). Returns the request id to ask
    /// [`Jobs::upgrade_status`] with.
    pub fn rollback(&self, id: &str) -> Result<String, SavepointError> {
        let (job, plan) = self.running(id, "be rolled back")?;
        let Some(LastSwap { previous, savepoint }) = lock(&job.last_swap).take() else {
            return Err(SavepointError::Target(format!("job {id} has no upgrade to roll back")));
        };
        let restore = savepoint.restore().map_err(|e| {
            SavepointError::Target(format!(
                "the last upgrade's savepoint was not stored ({e}): nothing to roll back to"
            ))
        })?;
        self.stop_for(&job, id, &plan, previous, Vec::new(), Some(Arc::new(restore)))
    }

    /// Stops `job`, now running `plan`, at a savepoint, to go on as `next` (an upgrade, or a
    /// rollback from `rollback`'s savepoint).
    fn stop_for(
        &self,
        job: &Arc<Job>,
        id: &str,
        plan: &JobPlan,
        next: Arc<JobPlan>,
        uids: Vec<String>,
        rollback: Option<Arc<Restore>>,
    ) -> Result<String, SavepointError> {
        let sink = Arc::new(plan.savepoint_sink(None).map_err(SavepointError::Target)?);
        let request_id = self.request_id(id);
        // In place when every operator of the next run declares the states of the one it
        // replaces: then nothing needs reading back, and the job goes on before the savepoint is
        // stored.
        let handover = rollback.is_none() && plan.declares_same_states(&next);
        {
            let mut pending = lock(&job.upgrade);
            if pending.is_some() {
                return Err(SavepointError::Target(format!("job {id} is already being upgraded")));
            }
            let request = request_id.clone();
            *pending = Some(PendingUpgrade { request, plan: next, sink: sink.clone(), uids, rollback });
        }
        lock(&job.upgrades).insert(request_id.clone(), UpgradeProgress::InProgress);
        let (runner, key, stored) = (job.clone(), request_id.clone(), sink.clone());
        let done = Box::new(move |result: Result<u64, String>| {
            let Err(cause) = result else { return };
            stored.failed(cause.clone());
            if lock(&runner.upgrade).take().is_some() {
                let cause = format!("the savepoint before the swap failed: {cause}");
                lock(&runner.upgrades).insert(key, UpgradeProgress::Failed { cause });
            } else {
                // The new modules already run: only the rollback point is lost.
                tracing::warn!(
                    "the savepoint of upgrade {key} failed after the swap ({cause}); it cannot be rolled back"
                );
            }
        });
        let request = SavepointRequest { sink, stop: true, handover, done };
        if job.savepoint_requests.0.send(request).is_err() {
            lock(&job.upgrade).take();
            let cause = "the job ended".to_string();
            lock(&job.upgrades).insert(request_id.clone(), UpgradeProgress::Failed { cause });
        }
        Ok(request_id)
    }

    /// Where upgrade `request` of job `id` stands, if both exist.
    pub fn upgrade_status(&self, id: &str, request: &str) -> Option<UpgradeStatus> {
        let job = lock(&self.jobs).get(id).cloned()?;
        let upgrades = lock(&job.upgrades);
        Some(match upgrades.get(request)? {
            UpgradeProgress::InProgress => UpgradeStatus::InProgress,
            UpgradeProgress::Failed { cause } => UpgradeStatus::Failed { cause: cause.clone() },
            UpgradeProgress::RolledBack { savepoint, cause } => {
                UpgradeStatus::RolledBack { savepoint: savepoint.clone(), cause: cause.clone() }
            }
            UpgradeProgress::Restarted { run, .. } if job.metrics.runs() < *run => UpgradeStatus::InProgress,
            UpgradeProgress::Restarted { savepoint, last_batches, .. } => {
                let mut pause_ms: f64 = 0.0;
                for (uid, last) in last_batches {
                    match job.metrics.batches_processed(uid).0 {
                        0 => return Some(UpgradeStatus::InProgress),
                        first => pause_ms = pause_ms.max(first.saturating_sub(*last) as f64 / 1e6),
                    }
                }
                UpgradeStatus::Completed { savepoint: savepoint.clone(), pause_ms }
            }
        })
    }

    /// Where savepoint `trigger` of job `id` stands, if both exist.
    pub fn savepoint_status(&self, id: &str, trigger: &str) -> Option<SavepointStatus> {
        let job = lock(&self.jobs).get(id).cloned()?;
        lock(&job.triggers).get(trigger).cloned()
    }

    /// Every completed savepoint of every job, oldest first.
    pub fn savepoints(&self) -> Vec<SavepointRecord> {
        let mut all: Vec<SavepointRecord> = self.list().into_iter().flat_map(|j| j.savepoints).collect();
        all.sort_by_key(|s| s.taken_at);
        all
    }

    /// The checkpoint statistics of a job, if there is such a job.
    pub fn checkpoints(&self, id: &str) -> Option<CheckpointStats> {
        let job = lock(&self.jobs).get(id).cloned()?;
        Some(job.metrics.checkpoints())
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

    /// Asks a running job to stop; it becomes `canceled` once its subtasks have stopped.
    pub fn cancel(&self, id: &str) -> Result<JobInfo, CancelError> {
        let job = lock(&self.jobs).get(id).cloned().ok_or_else(|| CancelError::NotFound(id.to_string()))?;
        let state = lock(&job.info).state;
        if state.is_terminal() {
            return Err(CancelError::Ended { id: id.to_string(), state });
        }
        job.cancel.store(true, Ordering::SeqCst);
        Ok(self.info(&job))
    }

    fn info(&self, job: &Job) -> JobInfo {
        let mut info = lock(&job.info).clone();
        if !info.state.is_terminal() {
            info.vertices = job.metrics.snapshot();
            info.first_event_at = job.metrics.first_sink_event_at();
        }
        info
    }

    fn update(&self, job: &Job, change: impl FnOnce(&mut JobInfo)) {
        update(self.dir.as_deref(), job, change);
    }
}

/// Takes what `slot` holds, its lock released at once (a guard in a `match` scrutinee would be
/// held through the whole match).
fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    lock(slot).take()
}

fn update(dir: Option<&Path>, job: &Job, change: impl FnOnce(&mut JobInfo)) {
    let mut info = lock(&job.info);
    change(&mut info);
    persist(dir, &info);
}

/// Runs a job's attempts until one finishes, it is canceled, or the restart strategy gives up.
/// Each restart resumes from the latest completed checkpoint, with the next attempt number.
fn run_attempts(
    dir: Option<&Path>,
    job: &Job,
    mut plan: Arc<JobPlan>,
    first: JobGraph,
    mut savepoint: Option<Arc<Restore>>,
) {
    let mut restarts = Restarts::new(plan.restart_strategy().clone());
    let mut attempt = first.attempt;
    // An attempt's graph, or why it could not be built (the storage may be down): that fails the
    // attempt like a failing subtask, and the restart strategy decides what comes next.
    let mut next: Result<JobGraph, String> = Ok(first);
    let mut swap: Option<Swap> = None;
    let (state, failure) = loop {
        let started = Instant::now();
        let failure = match next {
            Ok(mut graph) => {
                graph.savepoints = Some(job.savepoint_requests.1.clone());
                graph.handover = Some(job.handover.clone());
                match runtime::execute(graph, job.cancel.clone(), job.metrics.clone()) {
                    Ok(()) => match take(&job.upgrade) {
                        // Stopped for an upgrade: the next run has the new code and the state.
                        Some(upgrade) => {
                            (plan, next, swap) = upgraded(dir, job, plan, upgrade, attempt);
                            continue;
                        }
                        None => break (JobState::Finished, None),
                    },
                    Err(JobFailure::Cancelled) => {
                        plan.canceled();
                        break (JobState::Canceled, None);
                    }
                    Err(failure) => failure.to_string(),
                }
            }
            Err(cause) => cause,
        };
        update(dir, job, |i| {
            i.failures.push(FailureRecord { timestamp: now_ms(), attempt, cause: failure.clone() });
            let excess = i.failures.len().saturating_sub(FAILURE_HISTORY);
            i.failures.drain(..excess);
        });
        if let Some(swap) = swap.take().filter(|s| {
            let events = job.metrics.snapshot().iter().filter(|v| s.uids.contains(&v.uid)).map(|v| v.events_in).max();
            plan.rollback_window().covers(s.at.elapsed(), events.unwrap_or(0))
        }) {
            match swap.sink.stored() {
                Ok(restore) => {
                    let Swap { request, previous, .. } = swap;
                    let restore = Arc::new(restore);
                    savepoint = Some(restore.clone());
                    (plan, next) = rolled_back(dir, job, request, previous, restore, &failure, attempt);
                    continue;
                }
                Err(e) => {
                    tracing::warn!("job '{}': cannot roll back, the upgrade's savepoint failed: {e}", plan.name())
                }
            }
        }
        let Some(delay) = restarts.next_delay(started, Instant::now()) else {
            let cause = match plan.restart_strategy() {
                RestartStrategy::None => failure,
                strategy => format!("{failure} (not restarted again: the {strategy} allows no more restarts)"),
            };
            break (JobState::Failed, Some(cause));
        };
        attempt += 1;
        let delay_text = humantime::format_duration(Duration::from_millis(delay.as_millis() as u64));
        tracing::warn!("job '{}' failed: {failure}; restarting in {delay_text} (attempt {attempt})", plan.name());
        update(dir, job, |i| {
            i.state = JobState::Restarting;
            i.attempt = attempt;
        });
        if !sleep_unless_canceled(delay, &job.cancel) {
            plan.canceled();
            break (JobState::Canceled, None);
        }
        next = restart(job, &plan, attempt, lock(&job.info).first_checkpoint, savepoint.clone());
        if next.is_ok() {
            update(dir, job, |i| i.state = JobState::Running);
        }
    };
    // The job is over: nothing can roll it back or upgrade it now, and what it claimed goes.
    *lock(&job.plan) = None;
    lock(&job.last_swap).take();
    lock(&job.upgrade).take();
    drop((plan, swap));
    while let Ok(request) = job.savepoint_requests.1.try_recv() {
        (request.done)(Err("the job ended before the savepoint was taken".to_string()));
    }
    update(dir, job, |info| {
        info.vertices = job.metrics.snapshot();
        info.first_event_at = job.metrics.first_sink_event_at();
        info.ended_at = Some(now_ms());
        info.state = state;
        info.failure = failure;
        info.rollback_point = None;
    });
}

/// The run after job stopped for `upgrade`: the new plan, from the upgrade's savepoint, each
/// operator taking the state its predecessor left in place. If the new plan cannot be built, the
/// old one goes on from the same savepoint, and the upgrade is reported failed.
fn upgraded(
    dir: Option<&Path>,
    job: &Job,
    old: Arc<JobPlan>,
    upgrade: PendingUpgrade,
    attempt: u32,
) -> (Arc<JobPlan>, Result<JobGraph, String>, Option<Swap>) {
    let PendingUpgrade { request, plan, sink, uids, rollback } = upgrade;
    if let Some(restore) = rollback {
        let (plan, graph) = rolled_back(dir, job, request, plan, restore, "asked for", attempt);
        return (plan, graph, None);
    }
    let last_batches: Vec<(String, u64)> =
        uids.iter().map(|uid| (uid.clone(), job.metrics.batches_processed(uid).1)).collect();
    // Handed over in place, the job goes on at once; else from the savepoint once stored.
    let restore = match job.handover.take_stopped() {
        stopped if !stopped.positions.is_empty() => Arc::new(sink.in_place(stopped)),
        _ => match sink.stored() {
            Ok(restore) => Arc::new(restore),
            Err(e) => return (old, Err(format!("the upgrade's savepoint failed: {e}")), None),
        },
    };
    let handover = Some(job.handover.clone());
    let savepoint = sink.location();
    let (plan, graph, status, swap) = match plan.build_after_upgrade(attempt, Some(restore.clone()), handover.clone()) {
        Ok(graph) => {
            update(dir, job, |i| {
                i.job = plan.text().to_string();
                i.history.push(HistoryEntry::new(HistoryEvent::Upgraded, &plan, Some(savepoint.clone()), None));
                i.rollback_point = Some(RollbackPoint { job: old.text().to_string(), savepoint: savepoint.clone() });
            });
            let taken = SwapSavepoint::Taken(sink.clone());
            *lock(&job.last_swap) = Some(LastSwap { previous: old.clone(), savepoint: taken });
            let run = job.metrics.runs() + 1;
            let swap = Swap { request: request.clone(), previous: old, sink, at: Instant::now(), uids };
            (plan, Ok(graph), UpgradeProgress::Restarted { savepoint, run, last_batches }, Some(swap))
        }
        Err(e) => {
            let graph = old.build_after_upgrade(attempt, Some(restore), handover).map_err(|e| e.to_string());
            (old, graph, UpgradeProgress::Failed { cause: format!("the upgraded job cannot start: {e}") }, None)
        }
    };
    *lock(&job.plan) = Some(plan.clone());
    lock(&job.upgrades).insert(request, status);
    (plan, graph, swap)
}

/// The run after `swap` is rolled back (its new modules failed right after it, or a rollback was
/// asked for; `cause` says which): the job as it ran before, from the savepoint taken before the
/// swap (its output after that savepoint is written again; the file sink drops what was
/// committed since).
fn rolled_back(
    dir: Option<&Path>,
    job: &Job,
    request: String,
    previous: Arc<JobPlan>,
    restore: Arc<Restore>,
    cause: &str,
    attempt: u32,
) -> (Arc<JobPlan>, Result<JobGraph, String>) {
    let savepoint = restore.location();
    tracing::warn!("job '{}': rolling back its last upgrade ({cause}), from {savepoint}", previous.name());
    lock(&job.last_swap).take();
    let progress = UpgradeProgress::RolledBack { savepoint: savepoint.clone(), cause: cause.to_string() };
    lock(&job.upgrades).insert(request, progress);
    *lock(&job.plan) = Some(previous.clone());
    let graph = previous.build(attempt, Some(restore)).map_err(|e| format!("the rollback failed: {e}"));
    // Checkpoints taken with the failed modules are not restarts' to resume from.
    let first = graph.as_ref().ok().and_then(|g| g.checkpointing.as_ref()).map_or(0, |c| c.first_id);
    let entry = HistoryEntry::new(HistoryEvent::RolledBack, &previous, Some(savepoint), Some(cause.to_string()));
    update(dir, job, |i| {
        i.job = previous.text().to_string();
        i.first_checkpoint = first;
        i.history.push(entry);
        i.rollback_point = None;
    });
    (previous, graph)
}

/// The graph of attempt `attempt`, resuming from the job's latest checkpoint since `since`, or
/// else from the `savepoint` the run started from, or else from the start.
fn restart(
    job: &Job,
    plan: &JobPlan,
    attempt: u32,
    since: u64,
    savepoint: Option<Arc<Restore>>,
) -> Result<JobGraph, String> {
    let checkpoint = plan.latest_checkpoint(since).map_err(|e| format!("the restart failed: {e}"))?;
    let restore = checkpoint.map(Arc::new).or(savepoint);
    let from = restore.as_ref().map_or("the start (no checkpoint completed yet)".to_string(), |r| {
        job.metrics.checkpoint_stats(|s| s.restored(r.stats()));
        match r.is_savepoint() {
            true => format!("savepoint {}", r.location()),
            false => format!("checkpoint {}", r.id()),
        }
    });
    tracing::warn!("job '{}': attempt {attempt} resumes from {from}", plan.name());
    plan.build(attempt, restore).map_err(|e| format!("the restart failed: {e}"))
}

/// Sleeps for `delay`; false when the job was canceled meanwhile.
fn sleep_unless_canceled(delay: Duration, cancel: &AtomicBool) -> bool {
    let until = Instant::now() + delay;
    while !cancel.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
    false
}

fn persist(dir: Option<&Path>, info: &JobInfo) {
    let Some(dir) = dir else { return };
    let path = dir.join(format!("{}.json", info.id));
    let bytes = serde_json::to_vec_pretty(info).unwrap_or_default();
    if let Err(e) = write_atomically(&path, &bytes) {
        tracing::warn!("cannot persist job {} to {}: {e}", info.id, path.display());
    }
}
