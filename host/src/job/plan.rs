//! [`JobPlan`]: a checked job that can be built into a graph again and again: for its first
//! attempt, for each restart, and when a server resumes it. It keeps the modules it resolved
//! (a restart runs exactly the code the job started with) and its checkpoint storage.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::claims::Claims;
use super::placement::Placement;
use super::restart::RestartStrategy;
use super::spec::{JobSpec, Retention, SinkType};
use super::state::StateSettings;
use super::{
    JobError, ModuleRefError, Modules, Start, build, check_shape, check_takes_over, checkpoint_interval, operator_code,
    parse,
};
use crate::checkpoint::Restore;
use crate::checkpoint::savepoint::{SavepointFormat, SavepointOperator, SavepointSink};
use crate::checkpoint::storage::Storage;
use crate::runtime::{Handover, JobGraph};
use crate::state::StateDescriptor;
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
    /// The job's id: 32 hex digits, the same across its restarts, upgrades and resumptions. Its
    /// checkpoints and the files its sinks write name it, so that no job takes another's.
    id: String,
    name: String,
    text: String,
    label: String,
    base: PathBuf,
    modules: HashMap<String, Arc<OperatorModule>>,
    restart: RestartStrategy,
    checkpoints: Option<Checkpoints>,
    rollback: RollbackWindow,
    /// The sink and checkpoint directories it holds until it ends (shared with the plans of its
    /// upgrades and rollbacks).
    claims: Arc<Claims>,
    /// Where it may read and write, and where its checkpoints and savepoints go by default.
    placement: Arc<Placement>,
    /// Where its operators keep their keyed state.
    state: StateSettings,
    /// What each module version of an operator with a canary served, by operator uid: kept
    /// across the restarts of this plan (a canary's next step is another plan, counted anew).
    versions: super::canary::VersionCounts,
}

/// How soon after an upgrade a failure rolls the job back: within `time` of the swap, and before
/// the new modules have processed `events` events (when set).
#[derive(Debug, Clone, Copy)]
pub struct RollbackWindow {
    /// Zero: never roll back.
    pub time: std::time::Duration,
    /// Events the new modules may process before a failure no longer rolls back.
    pub events: Option<u64>,
}

impl RollbackWindow {
    /// Whether a failure `elapsed` after the swap, with `events` processed by the new modules,
    /// rolls back.
    pub fn covers(&self, elapsed: std::time::Duration, events: u64) -> bool {
        elapsed < self.time && self.events.is_none_or(|limit| events < limit)
    }
}

impl JobPlan {
    /// Parses and checks job TOML `text`, resolves its modules and claims its sink and checkpoint
    /// directories for a new job. `label` names the job in errors (`"job file <path>"`, "submitted
    /// job"); relative paths start at `base`.
    /// Every path it names must lie where `placement` allows.
    pub fn new(
        text: String,
        label: &str,
        base: &Path,
        modules: &mut dyn Modules,
        placement: Arc<Placement>,
    ) -> Result<JobPlan, JobError> {
        let (mut plan, spec) = Self::checked(text, label, base, modules, placement)?;
        plan.claims =
            Arc::new(plan.claim(&spec).map_err(|message| JobError::Invalid { file: label.to_string(), message })?);
        Ok(plan)
    }

    /// The same job under the id it had before: a job resumed (from its checkpoints, or by a
    /// server that restarted) is the job that wrote them.
    pub fn with_id(mut self, id: &str) -> JobPlan {
        self.id = id.to_string();
        self
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Another version of this same job, from job TOML `text` (the job after an upgrade, or
    /// before it): it keeps this one's id and what it claimed, so only its modules may differ.
    pub fn sibling(&self, text: String, modules: &mut dyn Modules) -> Result<JobPlan, JobError> {
        let (mut plan, _) = Self::checked(text, &self.label, &self.base, modules, self.placement.clone())?;
        plan.id = self.id.clone();
        plan.claims = self.claims.clone();
        Ok(plan)
    }

    /// Claims every file sink's directory and the checkpoint directory for this job.
    fn claim(&self, spec: &JobSpec) -> Result<Claims, String> {
        let mut claims = Claims::default();
        for sink in spec.sinks.iter().filter(|s| s.kind == SinkType::File) {
            let Some(path) = &sink.path else { continue };
            let dir = self.base.join(path);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("sink '{}': cannot create directory {}: {e}", sink.uid, dir.display()))?;
            let dir = dir.canonicalize().map_err(|e| format!("sink '{}': {}: {e}", sink.uid, dir.display()))?;
            let refusal = || {
                format!(
                    "sink '{}': another job is writing to {}; give each job a sink directory of its own",
                    sink.uid,
                    dir.display()
                )
            };
            claims.claim(format!("sink:{}", dir.display()), Some(&dir.join(".weir-sink.lock")), refusal)?;
        }
        if let Some(c) = &self.checkpoints {
            let job_dir = crate::checkpoint::paths::job_dir(&self.name);
            let local = c.storage.local_path(&job_dir);
            let key = match &local {
                Some(dir) => format!("checkpoints:{}", dir.display()),
                None => format!("checkpoints:{}/{job_dir}", c.storage.url().trim_end_matches('/')),
            };
            let refusal = || {
                format!(
                    "another job named '{}' is running with its checkpoints in {}; give each job a name of its \
                     own (or a checkpoint storage of its own)",
                    self.name,
                    c.storage.display(&job_dir)
                )
            };
            claims.claim(key, local.map(|dir| dir.join(".weir-job.lock")).as_deref(), refusal)?;
        }
        Ok(claims)
    }

    /// Parses and checks job TOML `text` and resolves its modules, claiming nothing; returns the
    /// plan and the parsed job.
    fn checked(
        text: String,
        label: &str,
        base: &Path,
        modules: &mut dyn Modules,
        placement: Arc<Placement>,
    ) -> Result<(JobPlan, JobSpec), JobError> {
        let invalid = |message: String| JobError::Invalid { file: label.to_string(), message };
        let spec = parse(&text, label)?;
        let dataflow = check_shape(&spec).map_err(invalid)?;
        placement.check_paths(&spec, base).map_err(invalid)?;
        let mut resolved = HashMap::new();
        let references = spec.operators.iter().flat_map(|op| {
            let canary = op.canary.as_ref().map(|c| &c.module);
            op.module.iter().chain(canary).map(move |reference| (op, reference))
        });
        for (op, reference) in references {
            if resolved.contains_key(reference) {
                continue;
            }
            let module = modules.resolve(reference).map_err(|e| match e {
                ModuleRefError::Module(problem) => {
                    JobError::Module { file: label.to_string(), uid: op.uid.clone(), problem }
                }
                ModuleRefError::Reference(message) => invalid(format!("operator '{}': {message}", op.uid)),
            })?;
            resolved.insert(reference.clone(), module);
        }
        super::build::check_graph_modules(&spec, &dataflow, &resolved).map_err(invalid)?;
        super::canary::check(&spec, &dataflow, &resolved).map_err(invalid)?;
        let checkpoints = match &spec.checkpointing {
            Some(c) if !checkpoint_interval(c).map_err(invalid)?.is_zero() => {
                let url = c.storage.as_deref().unwrap_or(&placement.checkpoints);
                let storage = Storage::open(url, base).map_err(|e| invalid(e.to_string()))?;
                Some(Checkpoints { storage, retention: c.retention })
            }
            _ => None,
        };
        let restart = RestartStrategy::from_spec(spec.restart.as_ref(), checkpoints.is_some()).map_err(invalid)?;
        let upgrade = spec.upgrade.as_ref();
        let time = match upgrade.and_then(|u| u.rollback_window.as_deref()) {
            None => std::time::Duration::from_secs(30),
            Some(text) => super::spec::duration(text).ok_or_else(|| {
                invalid(format!(
                    "[upgrade] rollback-window \"{text}\" is not a duration of at most 365 days, such as \"30s\""
                ))
            })?,
        };
        let rollback = RollbackWindow { time, events: upgrade.and_then(|u| u.rollback_window_events) };
        let state = StateSettings::from_spec(&spec.state, base, &placement.state).map_err(invalid)?;
        let plan = JobPlan {
            id: new_job_id(&spec.name),
            name: spec.name.clone(),
            text,
            label: label.to_string(),
            base: base.to_path_buf(),
            modules: resolved,
            restart,
            checkpoints,
            rollback,
            claims: Arc::default(),
            placement,
            state,
            versions: Default::default(),
        };
        Ok((plan, spec))
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job file's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether every operator of `other` declares the states of the operator of the same uid here,
    /// in the same order (schema versions aside: entries are migrated): then the state of a run of
    /// this job can be handed over in place to one of it.
    pub fn declares_same_states(&self, other: &JobPlan) -> bool {
        let (Ok(mine), Ok(theirs)) = (parse(&self.text, &self.label), parse(&other.text, &other.label)) else {
            return false;
        };
        theirs.operators.iter().all(|op| {
            let before = mine.operators.iter().find(|o| o.uid == op.uid);
            let states = |op, modules| operator_code(op, modules).map(|(_, states)| states);
            before.is_some_and(|before| match (states(before, &self.modules), states(op, &other.modules)) {
                (Some(before), Some(after)) => StateDescriptor::same_states(&before, &after),
                _ => false,
            })
        })
    }

    /// Each operator's uid and the code it runs, for people: `count 1.0.0 (sha256:…)`.
    pub fn operator_codes(&self) -> Vec<(String, String)> {
        let Ok(spec) = parse(&self.text, &self.label) else { return Vec::new() };
        let code = |op| operator_code(op, &self.modules).map(|(code, _)| code.to_string());
        spec.operators.iter().filter_map(|op| Some((op.uid.clone(), code(op)?))).collect()
    }

    /// The SHA-256 of each module it runs, each once.
    pub fn module_digests(&self) -> std::collections::BTreeSet<String> {
        self.modules.values().map(|m| m.sha256.clone()).collect()
    }

    /// When a failure after an upgrade rolls it back.
    pub fn rollback_window(&self) -> RollbackWindow {
        self.rollback
    }

    /// What happens when an attempt fails.
    pub fn restart_strategy(&self) -> &RestartStrategy {
        &self.restart
    }

    /// The graph of attempt `attempt` (from 0), resuming from `restore` if given. Opens the
    /// sinks: a fresh start clears their output, a resumed one keeps what `restore` covers.
    pub fn build(&self, attempt: u32, restore: Option<Arc<Restore>>) -> Result<JobGraph, JobError> {
        self.build_after_upgrade(attempt, restore, None, false)
    }

    /// Like [`JobPlan::build`], for the run after an upgrade: operators take the state their
    /// predecessors left in `handover` where it fits, else read it from `restore`. With
    /// `swapped` (the new modules run), sinks that cannot take output back hold it back for the
    /// rollback window.
    pub fn build_after_upgrade(
        &self,
        attempt: u32,
        restore: Option<Arc<Restore>>,
        handover: Option<Arc<Handover>>,
        swapped: bool,
    ) -> Result<JobGraph, JobError> {
        let spec: JobSpec = parse(&self.text, &self.label)?;
        let storage = self.checkpoints.as_ref().map(|c| &c.storage);
        let hold_output = swapped.then_some(self.rollback.time).filter(|window| !window.is_zero());
        let versions = &self.versions;
        let start = Start { job_id: &self.id, attempt, restore, handover, state: &self.state, hold_output, versions };
        build(spec, &self.label, &self.base, &self.modules, storage, start)
    }

    /// A savepoint of the running job into `dir` (a URL or a local directory), or else the job's
    /// `savepoint-dir`, or else the default of its placement, its state in form `format`.
    pub fn savepoint_sink(&self, dir: Option<&str>, format: SavepointFormat) -> Result<SavepointSink, String> {
        if format == SavepointFormat::Native && !self.state.reads_native() {
            return Err(format!(
                "job '{}' keeps its state in memory, which has no native format: take a canonical savepoint (the \
                 default), or set [state] backend = \"rocksdb\"",
                self.name
            ));
        }
        let spec = parse(&self.text, &self.label).map_err(|e| e.to_string())?;
        let configured = spec.checkpointing.as_ref().and_then(|c| c.savepoint_dir.clone());
        let url = match dir.map(str::to_string).or(configured) {
            Some(dir) if dir.contains("://") => dir,
            Some(dir) => format!("file://{dir}"),
            None => self.placement.savepoints.clone(),
        };
        self.placement.allowed.check_url("the savepoint directory", &url, &self.base)?;
        let storage = Storage::open(&url, &self.base).map_err(|e| e.to_string())?;
        let operators = spec
            .operators
            .iter()
            .filter_map(|op| {
                let (module, states) = operator_code(op, &self.modules)?;
                let parallelism = op.parallelism.unwrap_or(spec.parallelism);
                let canary = super::canary::saved(op, &self.modules, spec.max_parallelism);
                Some(SavepointOperator { uid: op.uid.clone(), parallelism, module, states, files: Vec::new(), canary })
            })
            .collect();
        Ok(SavepointSink::new(storage, (&self.name, &self.id), spec.max_parallelism, operators, format))
    }

    /// The same job with each `(uid, module reference)` operator running the new module, resolved
    /// by `modules` (an upgrade). Refused, saying why, for an unknown or builtin operator, or a
    /// module that cannot take over the state of the one it replaces.
    pub fn upgraded(&self, replacements: &[(String, String)], modules: &mut dyn Modules) -> Result<JobPlan, String> {
        let upgraded = self.edited(modules, |operators| {
            for (uid, reference) in replacements {
                let op = operator_table(operators, uid)?;
                op.insert("module".to_string(), toml::Value::String(reference.clone()));
            }
            Ok(())
        })?;
        let (old, new) = (parse(&self.text, &self.label), parse(&upgraded.text, &upgraded.label));
        let (old, new) = (old.map_err(|e| e.to_string())?, new.map_err(|e| e.to_string())?);
        for (uid, _) in replacements {
            let find = |spec: &JobSpec, modules| {
                let op = spec.operators.iter().find(|op| op.uid == *uid)?;
                operator_code(op, modules)
            };
            let (Some((old_code, old_states)), Some((new_code, new_states))) =
                (find(&old, &self.modules), find(&new, &upgraded.modules))
            else {
                return Err(format!("operator '{uid}': its module could not be resolved"));
            };
            check_takes_over(uid, (old_code, old_states), &new_code, &new_states)?;
        }
        Ok(upgraded)
    }

    /// The same job with its `[[operator]]` tables changed by `edit`, modules it does not run yet
    /// resolved by `modules`.
    pub(super) fn edited(
        &self,
        modules: &mut dyn Modules,
        edit: impl FnOnce(&mut [&mut toml::Table]) -> Result<(), String>,
    ) -> Result<JobPlan, String> {
        let mut table: toml::Table = toml::from_str(&self.text).map_err(|e| e.to_string())?;
        let operators = table.get_mut("operator").and_then(toml::Value::as_array_mut);
        let mut operators: Vec<&mut toml::Table> =
            operators.into_iter().flatten().filter_map(toml::Value::as_table_mut).collect();
        edit(&mut operators)?;
        let text = toml::to_string(&table).map_err(|e| e.to_string())?;
        // Modules the job already runs are not resolved again.
        let mut known = Known { known: &self.modules, others: modules };
        self.sibling(text, &mut known).map_err(|e| e.to_string())
    }

    /// The job file, parsed.
    pub(super) fn spec(&self) -> Result<JobSpec, String> {
        parse(&self.text, &self.label).map_err(|e| e.to_string())
    }

    /// The modules it runs, by reference.
    pub(super) fn modules(&self) -> &HashMap<String, Arc<OperatorModule>> {
        &self.modules
    }

    /// What the module versions of its operators with a canary served in its runs.
    pub(super) fn version_counts(&self) -> &super::canary::VersionCounts {
        &self.versions
    }

    /// Operator `uid` as this plan runs it, for a trial of its module (see [`crate::wasm::trial`]).
    pub fn trial_target(&self, uid: &str) -> Result<crate::wasm::trial::TrialTarget, String> {
        let spec = parse(&self.text, &self.label).map_err(|e| e.to_string())?;
        let op = spec.operators.iter().find(|op| op.uid == uid).ok_or(format!("the job has no operator '{uid}'"))?;
        let module = op.module.as_ref().and_then(|m| self.modules.get(m)).cloned();
        let module = module.ok_or(format!("operator '{uid}' does not run a module"))?;
        let config = serde_json::to_string(&op.config.clone().unwrap_or_default())
            .map_err(|e| format!("operator '{uid}': `config` cannot be passed as JSON: {e}"))?;
        let dataflow = super::graph::resolve(&spec)?;
        let inputs = spec.operators.iter().position(|o| o.uid == uid).and_then(|i| dataflow.operators.get(i));
        let broadcast_inputs =
            inputs.into_iter().flatten().map(|i| i.partitioning == crate::runtime::Partitioning::Broadcast).collect();
        Ok(crate::wasm::trial::TrialTarget {
            uid: uid.to_string(),
            module,
            config,
            keyed: op.keyed(),
            limits: super::build::sandbox_limits(op)?,
            parallelism: op.parallelism.unwrap_or(spec.parallelism),
            max_parallelism: spec.max_parallelism,
            broadcast_inputs,
        })
    }

    /// Whether its checkpoints hold state in RocksDB's native form, which only a RocksDB backend
    /// restores.
    pub fn checkpoints_native(&self) -> bool {
        self.state.reads_native()
    }

    /// The job's checkpoint storage, when it checkpoints.
    pub fn checkpoint_storage(&self) -> Option<&Storage> {
        self.checkpoints.as_ref().map(|c| &c.storage)
    }

    /// The newest intact checkpoint of this job to resume from, with an id of at least `since`
    /// (older ones belong to earlier runs); older ones are tried when newer ones are torn, with
    /// a warning, and checkpoints another job of this name wrote are never taken. `None` when the
    /// job does not checkpoint or has none yet.
    pub fn latest_checkpoint(&self, since: u64) -> Result<Option<Restore>, String> {
        match &self.checkpoints {
            Some(c) => Restore::latest(c.storage.clone(), &self.name, since, Some(&self.id)),
            None => Ok(None),
        }
    }

    /// The newest intact checkpoint of any job of this name (`weir run --from-checkpoint
    /// latest`: the run goes on as the job that wrote it).
    pub fn latest_checkpoint_of_name(&self) -> Result<Option<Restore>, String> {
        match &self.checkpoints {
            Some(c) => Restore::latest(c.storage.clone(), &self.name, 0, None),
            None => Ok(None),
        }
    }

    /// The job was canceled: with `retention = "delete-on-cancellation"` (the default) its
    /// checkpoints go (those of other jobs of its name stay).
    pub fn canceled(&self) {
        let Some(c) = self.checkpoints.as_ref().filter(|c| c.retention == Retention::DeleteOnCancellation) else {
            return;
        };
        let deleted = crate::checkpoint::owned_checkpoints(&c.storage, &self.name, &self.id)
            .and_then(|ids| ids.into_iter().try_for_each(|id| c.storage.delete_checkpoint(&self.name, id)))
            .map_err(|e| e.to_string())
            .and_then(|()| crate::checkpoint::delete_resume_points(&c.storage, &self.name, &self.id))
            .and_then(|()| crate::checkpoint::delete_unreferenced_shared_files(&c.storage, &self.name));
        if let Err(e) = deleted {
            tracing::warn!("cannot delete the checkpoints of canceled job '{}': {e}", self.name);
        }
    }
}

/// A new job id: 32 hex digits, unique within this process and, with the time in it, across
/// restarts.
pub fn new_job_id(name: &str) -> String {
    use sha2::Digest;
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let digest = sha2::Sha256::digest(format!("{name}/{nanos}/{seq}/{}", std::process::id()));
    hex::encode(&digest[..16])
}

/// Resolves the modules a job already runs from what it resolved before, others by `others`.
/// The `[[operator]]` table of operator `uid`, which must run a module, among `operators`.
pub(super) fn operator_table<'a>(
    operators: &'a mut [&mut toml::Table],
    uid: &str,
) -> Result<&'a mut toml::Table, String> {
    let op = operators
        .iter_mut()
        .find(|op| op.get("uid").and_then(toml::Value::as_str) == Some(uid))
        .ok_or_else(|| format!("the job has no operator '{uid}'"))?;
    if op.contains_key("builtin") {
        return Err(format!("operator '{uid}' is a builtin; only operators running a module can be upgraded"));
    }
    Ok(op)
}

struct Known<'a> {
    known: &'a HashMap<String, Arc<OperatorModule>>,
    others: &'a mut dyn Modules,
}

impl Modules for Known<'_> {
    fn resolve(&mut self, reference: &str) -> Result<Arc<OperatorModule>, ModuleRefError> {
        match self.known.get(reference) {
            Some(module) => Ok(module.clone()),
            None => self.others.resolve(reference),
        }
    }
}
