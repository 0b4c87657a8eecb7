//! Jobs: read and check a job file, then turn it into a runnable [`crate::runtime::JobGraph`] with its modules
//! loaded and its connectors opened.
//!
//! Layering: the top of the library; uses `runtime`, `wasm`, `connectors` and `builtin`.
mod build;
mod canary;
mod checks;
mod claims;
mod connectors;
mod event_time;
mod graph;
mod modules;
mod placement;
mod plan;
pub mod restart;
pub mod spec;
mod state;

use std::path::Path;

use build::{Start, build};
pub(crate) use build::{checkpoint_interval, sandbox_limits};
pub use canary::CanarySettings;
pub(crate) use checks::{check_shape, check_states, check_takes_over, operator_code};
pub(crate) use graph::{Input, chain_from};
pub use modules::{ModuleFiles, ModuleRefError, Modules, NoOtherModules};
pub use placement::{AllowedDirs, Placement};
pub use plan::{DEFAULT_CHECKPOINT_STORAGE, JobPlan, new_job_id};
pub use spec::JobSpec;

use crate::wasm::ModuleError;

/// Why a job file cannot be run. Every message names the file and the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The file could not be read.
    #[error("cannot read job file {file}: {cause}")]
    Read {
        /// Names the job in messages: `"job file <path>"`, or `"submitted job"`.
        file: String,
        /// The I/O error.
        cause: String,
    },
    /// Not valid TOML, or not the job file's shape.
    #[error("{file}: {cause}")]
    Parse {
        /// Names the job in messages: `"job file <path>"`, or `"submitted job"`.
        file: String,
        /// The parser's message, with line and column.
        cause: String,
    },
    /// Valid TOML, but not a valid job.
    #[error("{file}: {message}")]
    Invalid {
        /// Names the job in messages: `"job file <path>"`, or `"submitted job"`.
        file: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// An operator's module cannot be used.
    #[error("{file}: operator '{uid}': {problem}")]
    Module {
        /// Names the job in messages: `"job file <path>"`, or `"submitted job"`.
        file: String,
        /// The operator.
        uid: String,
        /// Why. (Not a `source`: the message holds it already, and a chain would print it twice.)
        problem: ModuleError,
    },
}

/// The factory of source `spec` of a job file in `base`, as a job builds it.
pub(crate) fn source_factory(
    spec: &spec::SourceSpec,
    base: &Path,
) -> Result<Box<dyn crate::runtime::SourceFactory>, String> {
    connectors::source(spec, base, 1).map(|(factory, _)| factory)
}

/// Reads a job file's text.
pub fn read(path: &Path) -> Result<String, JobError> {
    std::fs::read_to_string(path).map_err(|e| JobError::Read { file: path.display().to_string(), cause: e.to_string() })
}

/// Parses job TOML; `label` names the job in errors.
pub fn parse(text: &str, label: &str) -> Result<JobSpec, JobError> {
    toml::from_str(text)
        .map_err(|e| JobError::Parse { file: label.to_string(), cause: e.to_string().trim_end().to_string() })
}
