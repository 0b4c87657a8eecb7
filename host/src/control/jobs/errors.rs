//! Why the registry refuses a request.

use super::record::JobState;
use crate::job::JobError;

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
    #[error("job {id} is already {state}; only a created or running job can be canceled")]
    Ended {
        /// The job.
        id: String,
        /// Its terminal state.
        state: JobState,
    },
}

/// Why a savepoint cannot be asked for.
#[derive(Debug, thiserror::Error)]
pub enum SavepointError {
    /// No job has this id.
    #[error("no job with id {0}")]
    NotFound(String),
    /// The job's run has ended, and its state is about to say how.
    #[error("job {id} is ending (its sources are exhausted, or it failed); only a running job can {action}")]
    Ending {
        /// The job.
        id: String,
        /// What was asked for.
        action: &'static str,
    },
    /// The job is not running.
    #[error("job {id} is {state}; only a running job can {action}")]
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

/// Why an upgrade or a rollback cannot be asked for.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The job is unknown or not running, or its savepoint directory cannot be used.
    #[error(transparent)]
    Job(#[from] SavepointError),
    /// The new modules cannot take over (an unknown operator, a module that cannot read the
    /// state): the job runs on untouched.
    #[error("{0}")]
    Refused(String),
    /// The job is not where the request needs it: already being upgraded, or no upgrade to roll
    /// back.
    #[error("{0}")]
    Conflict(String),
}

/// Why a savepoint cannot be disposed of.
#[derive(Debug, thiserror::Error)]
pub enum DisposeError {
    /// No job of this server took it.
    #[error(
        "no savepoint of this server's jobs is at {0}; GET /v1/savepoints lists them (`weir savepoint dispose PATH` disposes of any other)"
    )]
    NotFound(String),
    /// A job that has not ended may still go back to it.
    #[error("{0}")]
    InUse(String),
    /// Its files could not be deleted.
    #[error("{0}")]
    Failed(String),
}
