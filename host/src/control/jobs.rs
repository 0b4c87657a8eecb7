//! The job registry: every job a server (or `weir run`) started, its state and its live counts.
//! Each job runs on its own thread (the executor's subtasks on theirs) and is persisted as
//! `<data-dir>/jobs/<id>.json` whenever its state changes.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{lock, write_atomically};
use crate::job::{self, JobError, Modules};
use crate::runtime::now_ms;
use crate::runtime::{self, JobFailure, JobGraph, JobMetrics, VertexSummary};

/// A job's state, in Flink's words. `failing` and `restarting` arrive with restart strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Accepted, subtasks not started yet.
    Created,
    /// Subtasks are running.
    Running,
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
    /// Per vertex (sources, operators, sinks), events in and out per subtask.
    pub vertices: Vec<VertexSummary>,
    /// The job file as submitted.
    pub job: String,
}

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The job file is invalid or names unusable modules.
    #[error(transparent)]
    Job(#[from] JobError),
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
}

/// Every job of this server.
pub struct Jobs {
    /// Where records are persisted; none for `weir run`'s single job.
    dir: Option<PathBuf>,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    sequence: AtomicU64,
}

impl Jobs {
    /// A registry persisting under `dir`, with the jobs recorded there. Jobs that were running when
    /// the previous server stopped are marked failed: resuming them needs checkpoints.
    pub fn open(dir: Option<PathBuf>) -> std::io::Result<Self> {
        let mut jobs = BTreeMap::new();
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
            for entry in std::fs::read_dir(dir)?.flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let Ok(Ok(mut info)) = std::fs::read(&path).map(|b| serde_json::from_slice::<JobInfo>(&b)) else {
                    tracing::warn!("ignoring unreadable job record {}", path.display());
                    continue;
                };
                if !info.state.is_terminal() {
                    info.state = JobState::Failed;
                    info.ended_at = Some(now_ms());
                    info.failure = Some("the server stopped while the job was running".to_string());
                    persist(Some(dir), &info);
                }
                let job = Job { info: Mutex::new(info.clone()), cancel: Arc::default(), metrics: Arc::default() };
                jobs.insert(info.id, Arc::new(job));
            }
        }
        Ok(Jobs { dir, jobs: Mutex::new(jobs), sequence: AtomicU64::new(0) })
    }

    /// Parses, checks and starts a submitted job. Relative source and sink paths start at `base`.
    pub fn submit(&self, text: &str, modules: &mut dyn Modules, base: &Path) -> Result<JobInfo, SubmitError> {
        let label = "submitted job";
        let spec = job::parse(text, label)?;
        let name = spec.name.clone();
        let graph = job::build(spec, label, base, modules, 0, None)?;
        Ok(self.start(name, graph, text.to_string()))
    }

    /// Starts a built job on its own thread and returns its record.
    pub fn start(&self, name: String, graph: JobGraph, job: String) -> JobInfo {
        let info = JobInfo {
            id: self.new_id(&name),
            name,
            state: JobState::Created,
            submitted_at: now_ms(),
            first_event_at: None,
            ended_at: None,
            failure: None,
            vertices: Vec::new(),
            job,
        };
        let job = Arc::new(Job { info: Mutex::new(info.clone()), cancel: Arc::default(), metrics: Arc::default() });
        lock(&self.jobs).insert(info.id.clone(), job.clone());
        self.update(&job, |i| i.state = JobState::Running);
        let (dir, runner) = (self.dir.clone(), job.clone());
        let spawned = std::thread::Builder::new().name(format!("job-{}", &info.id[..8])).spawn(move || {
            let result = runtime::execute(graph, runner.cancel.clone(), runner.metrics.clone());
            let mut info = lock(&runner.info);
            info.vertices = runner.metrics.snapshot();
            info.first_event_at = runner.metrics.first_sink_event_at();
            info.ended_at = Some(now_ms());
            (info.state, info.failure) = match result {
                Ok(_) => (JobState::Finished, None),
                Err(JobFailure::Cancelled) => (JobState::Canceled, None),
                Err(failure) => (JobState::Failed, Some(failure.to_string())),
            };
            persist(dir.as_deref(), &info);
        });
        if let Err(e) = spawned {
            self.update(&job, |i| {
                i.state = JobState::Failed;
                i.failure = Some(format!("cannot start the job's thread: {e}"));
            });
        }
        self.info(&job)
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
        let mut info = lock(&job.info);
        change(&mut info);
        persist(self.dir.as_deref(), &info);
    }

    /// 32 hex digits, unique within this process and, with the time in it, across restarts.
    fn new_id(&self, name: &str) -> String {
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let digest = Sha256::digest(format!("{name}/{nanos}/{seq}/{}", std::process::id()));
        hex::encode(&digest[..16])
    }
}

fn persist(dir: Option<&Path>, info: &JobInfo) {
    let Some(dir) = dir else { return };
    let path = dir.join(format!("{}.json", info.id));
    let bytes = serde_json::to_vec_pretty(info).unwrap_or_default();
    if let Err(e) = write_atomically(&path, &bytes) {
        tracing::warn!("cannot persist job {} to {}: {e}", info.id, path.display());
    }
}
