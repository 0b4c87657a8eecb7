//! [`JobPlan`]: a checked job that can be built into a graph again and again: for its first
//! attempt, for each restart, and when a server resumes it. It keeps the modules it resolved
//! (a restart runs exactly the code the job started with) and its checkpoint storage.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::restart::RestartStrategy;
use super::spec::{JobSpec, Retention};
use super::{JobError, ModuleRefError, Modules, build, check_shape, checkpoint_interval, operator_code, parse};
use crate::checkpoint::Restore;
use crate::checkpoint::savepoint::{SavepointOperator, SavepointSink};
use crate::checkpoint::storage::Storage;
use crate::runtime::JobGraph;
use crate::wasm::OperatorModule;

/// Where checkpoints go when `[checkpointing]` names no `storage`, relative to the job file.
pub const DEFAULT_CHECKPOINT_STORAGE: &str = "file://weir-data/checkpoints";
/// Where savepoints go when neither the request nor `[checkpointing] savepoint-dir` names a
/// directory, relative to the job file.
pub const DEFAULT_SAVEPOINT_DIR: &str = "file://weir-data/savepoints";

/// A job's checkpoint storage and what canceling does to it.
struct Checkpoints {
    storage: Storage,
    retention: Retention,
}

/// A checked job, ready to be built.
pub struct JobPlan {
    name: String,
    text: String,
    label: String,
    base: PathBuf,
    modules: HashMap<String, Arc<OperatorModule>>,
    restart: RestartStrategy,
    checkpoints: Option<Checkpoints>,
}

impl JobPlan {
    /// Parses and checks job TOML `text` and resolves its modules. `label` names the job in
    /// errors ("job file <path>", "submitted job"); relative paths start at `base`.
    pub fn new(text: String, label: &str, base: &Path, modules: &mut dyn Modules) -> Result<JobPlan, JobError> {
        let invalid = |message: String| JobError::Invalid { file: label.to_string(), message };
        let spec = parse(&text, label)?;
        check_shape(&spec).map_err(invalid)?;
        let mut resolved = HashMap::new();
        for op in &spec.operators {
            let Some(reference) = op.module.as_ref().filter(|r| !resolved.contains_key(*r)) else { continue };
            let module = modules.resolve(reference).map_err(|e| match e {
                ModuleRefError::Module(source) => {
                    JobError::Module { file: label.to_string(), uid: op.uid.clone(), source }
                }
                ModuleRefError::Reference(message) => invalid(format!("operator '{}': {message}", op.uid)),
            })?;
            resolved.insert(reference.clone(), module);
        }
        let checkpoints = match &spec.checkpointing {
            Some(c) if !checkpoint_interval(c).map_err(invalid)?.is_zero() => {
                let url = c.storage.as_deref().unwrap_or(DEFAULT_CHECKPOINT_STORAGE);
                let storage = Storage::open(url, base).map_err(|e| invalid(e.to_string()))?;
                Some(Checkpoints { storage, retention: c.retention })
            }
            _ => None,
        };
        let restart = RestartStrategy::from_spec(spec.restart.as_ref(), checkpoints.is_some()).map_err(invalid)?;
        Ok(JobPlan {
            name: spec.name,
            text,
            label: label.to_string(),
            base: base.to_path_buf(),
            modules: resolved,
            restart,
            checkpoints,
        })
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job file's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// What happens when an attempt fails.
    pub fn restart_strategy(&self) -> &RestartStrategy {
        &self.restart
    }

    /// The graph of attempt `attempt` (from 0), resuming from `restore` if given. Opens the
    /// sinks: a fresh start clears their output, a resumed one keeps what `restore` covers.
    pub fn build(&self, attempt: u32, restore: Option<Arc<Restore>>) -> Result<JobGraph, JobError> {
        let spec: JobSpec = parse(&self.text, &self.label)?;
        let storage = self.checkpoints.as_ref().map(|c| &c.storage);
        build(spec, &self.label, &self.base, &self.modules, storage, attempt, restore)
    }

    /// A savepoint of the running job into `dir` (a URL or a local directory), or else the job's
    /// `savepoint-dir`, or else [`DEFAULT_SAVEPOINT_DIR`].
    pub fn savepoint_sink(&self, dir: Option<&str>) -> Result<SavepointSink, String> {
        let spec = parse(&self.text, &self.label).map_err(|e| e.to_string())?;
        let configured = spec.checkpointing.as_ref().and_then(|c| c.savepoint_dir.clone());
        let url = match dir.map(str::to_string).or(configured) {
            Some(dir) if dir.contains("://") => dir,
            Some(dir) => format!("file://{dir}"),
            None => DEFAULT_SAVEPOINT_DIR.to_string(),
        };
        let storage = Storage::open(&url, &self.base).map_err(|e| e.to_string())?;
        let operators = spec
            .operators
            .iter()
            .filter_map(|op| {
                let (module, states) = operator_code(op, &self.modules)?;
                let parallelism = op.parallelism.unwrap_or(spec.parallelism);
                Some(SavepointOperator { uid: op.uid.clone(), parallelism, module, states, files: Vec::new() })
            })
            .collect();
        Ok(SavepointSink::new(storage, &self.name, spec.max_parallelism, operators))
    }

    /// The job's checkpoint storage, when it checkpoints.
    pub fn checkpoint_storage(&self) -> Option<&Storage> {
        self.checkpoints.as_ref().map(|c| &c.storage)
    }

    /// The newest intact checkpoint to resume from, with an id of at least `since` (older ones
    /// belong to earlier runs of a job of this name); older ones are tried when newer ones are
    /// torn, with a warning. `None` when the job does not checkpoint or has none yet.
    pub fn latest_checkpoint(&self, since: u64) -> Result<Option<Restore>, String> {
        match &self.checkpoints {
            Some(c) => Restore::latest(c.storage.clone(), &self.name, since),
            None => Ok(None),
        }
    }

    /// The job was canceled: with `retention = "delete-on-cancellation"` (the default) its
    /// checkpoints go.
    pub fn canceled(&self) {
        let Some(c) = self.checkpoints.as_ref().filter(|c| c.retention == Retention::DeleteOnCancellation) else {
            return;
        };
        let deleted = c
            .storage
            .checkpoints(&self.name)
            .and_then(|ids| ids.into_iter().try_for_each(|id| c.storage.delete_checkpoint(&self.name, id)));
        if let Err(e) = deleted {
            tracing::warn!("cannot delete the checkpoints of canceled job '{}': {e}", self.name);
        }
    }
}
