//! What the registry records and shows of a job: its state, history, failures, lineage, and
//! savepoints and upgrades asked of it. These are the API's shapes (kebab-case JSON) and what
//! `<data-dir>/jobs/<id>.json` holds.

use serde::{Deserialize, Serialize};

use crate::job::JobPlan;
use crate::runtime::VertexSummary;
use crate::runtime::now_ms;

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
    /// An upgrade or a rollback is under way: the job stops at a savepoint and goes on with the
    /// other modules (back to `running` once they run, or at once if the savepoint fails).
    Upgrading,
    /// Bounded sources ended and every event reached the sinks.
    Finished,
    /// Stopped by a cancel request.
    Canceled,
    /// Stopped by a failure; `failure` says which subtask and why.
    Failed,
}

impl std::fmt::Display for JobState {
    /// As the API shows it: `running`, `upgrading`, ….
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        f.write_str(&name)
    }
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
    /// The failures that made it restart (or fail), oldest first, at most 16 (`FAILURE_HISTORY`).
    #[serde(default)]
    pub failures: Vec<FailureRecord>,
    /// Failures in which a Wasm operator trapped, over the job's life.
    #[serde(default)]
    pub guest_traps: u64,
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
    /// While the job runs a canary: the job file before it started and the savepoint taken then,
    /// which an abort by rollback goes back to (kept in the record for a restarted server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_start: Option<RollbackPoint>,
    /// Per vertex (sources, operators, sinks), events in and out per subtask.
    pub vertices: Vec<VertexSummary>,
    /// Its shadow runs, running and stopped (held in memory only: not persisted).
    #[serde(skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<crate::runtime::shadow::ShadowReport>,
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
    /// A fork: a new job beside that one (which commits its own output), not a restore of it.
    #[serde(default)]
    pub fork: bool,
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
    /// A canary's key groups went back to the operator's module when its abort condition held.
    CanaryAborted,
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
    /// For an upgrade: its request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// For an upgrade: from the last batch the old modules processed to the first the new ones
    /// did, in milliseconds, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_ms: Option<f64>,
}

impl HistoryEntry {
    pub(super) fn new(event: HistoryEvent, plan: &JobPlan, savepoint: Option<String>, cause: Option<String>) -> Self {
        HistoryEntry {
            timestamp: now_ms(),
            event,
            modules: plan.operator_codes(),
            savepoint,
            cause,
            request: None,
            pause_ms: None,
        }
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

/// Why a savepoint was taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SavepointReason {
    /// Asked for while the job runs on (`weir savepoint`).
    #[default]
    User,
    /// Asked for to stop the job (`weir stop`).
    Stop,
    /// Taken before an upgrade swapped modules (what a rollback goes back to).
    Upgrade,
    /// Taken before a rollback went back to the modules of before the last upgrade.
    Rollback,
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
    /// Why it was taken.
    #[serde(default)]
    pub reason: SavepointReason,
    /// The form of its state (`canonical` or `native`).
    #[serde(default)]
    pub format: crate::checkpoint::savepoint::SavepointFormat,
    /// Its `_metadata`'s format version.
    #[serde(default)]
    pub format_version: u32,
    /// Each operator's uid and code.
    pub operators: Vec<(String, String)>,
}
