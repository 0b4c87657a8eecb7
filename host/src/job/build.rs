//! Turning a checked job into a runnable graph: sources and sinks opened (by [`super::connectors`]),
//! operators with their modules, sandbox limits and the state they restore, checkpointing
//! configured.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::graph::Input;
use super::spec::JobSpec;
use super::spec::{CheckpointMode, CheckpointingSpec, OperatorSpec, SinkSpec, SourceSpec};

use super::state::StateSettings;
use crate::checkpoint::savepoint::OperatorCode;
use crate::checkpoint::storage::Storage;
use crate::checkpoint::{Restore, StorageSink};
use crate::state::{Backends, NATIVE_NEEDS_ROCKSDB, RestoredState, StateDescriptor, StateKind, StateRestore};

use crate::runtime::{
    CheckpointConfig, Handover, JobGraph, OperatorFactory, Partitioning, SideOutput, SinkFactory, SourceFactory,
    Vertex, VertexInput,
};
use crate::wasm::quarantine::Quarantine;
use crate::wasm::{CanaryFactory, OperatorModule, SandboxLimits, WasmOperatorFactory};

use super::JobError;
use super::checks::{check_parallelism, check_states, operator_code};
use super::connectors;

/// What a job's graph starts from: its attempt, the checkpoint or savepoint it resumes from, and
/// the state its previous run left in place (after an upgrade).
pub(super) struct Start<'a> {
    pub(super) job_id: &'a str,
    pub(super) attempt: u32,
    pub(super) restore: Option<Arc<Restore>>,
    pub(super) handover: Option<Arc<Handover>>,
    /// Where operators keep their keyed state (the job's `[state]`).
    pub(super) state: &'a StateSettings,
    /// After an upgrade: how long sinks that cannot take output back hold it back.
    pub(super) hold_output: Option<std::time::Duration>,
    /// What the module versions of operators with a canary served (the plan's).
    pub(super) versions: &'a super::canary::VersionCounts,
}

/// Builds a checked job's graph: sources and sinks opened, modules from `modules` (resolved
/// beforehand by [`JobPlan`]), checkpoints into `storage`. `label` names the job in errors;
/// relative source and sink paths start at `base`.
pub(super) fn build(
    spec: JobSpec,
    label: &str,
    base: &Path,
    modules: &HashMap<String, Arc<OperatorModule>>,
    storage: Option<&Storage>,
    start: Start,
) -> Result<JobGraph, JobError> {
    let Start { job_id, attempt, restore, handover, state, hold_output, versions } = start;
    let invalid = |message: String| JobError::Invalid { file: label.to_string(), message };
    if let Some(r) = &restore
        && r.max_parallelism() != spec.max_parallelism
    {
        return Err(invalid(format!(
            "{} was taken with max-parallelism {}, and the job now says {}; it cannot change (key groups \
             are what state is stored by): set max-parallelism = {}",
            r.describe(),
            r.max_parallelism(),
            spec.max_parallelism,
            r.max_parallelism()
        )));
    }
    if let Some(r) = &restore
        && !state.reads_native()
        && let Some(op) = spec.operators.iter().find(|op| r.has_native_state(&op.uid))
    {
        return Err(invalid(format!("{} cannot restore operator '{}': {NATIVE_NEEDS_ROCKSDB}", r.describe(), op.uid)));
    }
    let checkpointing = match (&spec.checkpointing, storage) {
        (Some(c), Some(storage)) => {
            let after = restore.as_ref().map_or(0, |r| r.id());
            let incremental = state.incremental();
            Some(
                checkpointing(c, (&spec.name, job_id), spec.max_parallelism, (storage, incremental), after)
                    .map_err(invalid)?,
            )
        }
        _ => None,
    };
    let mut ctx = Builder {
        base: base.to_path_buf(),
        label: label.to_string(),
        modules,
        parallelism: spec.parallelism,
        max_parallelism: spec.max_parallelism,
        restore,
        handover,
        two_phase_sinks: checkpointing.is_some(),
        hold_output,
        job_id,
        backends: state.backends(job_id).map_err(invalid)?,
        versions,
    };
    let dataflow = super::graph::resolve(&spec).map_err(invalid)?;
    let sources = spec.sources.iter().map(|s| ctx.source(s).map_err(invalid)).collect::<Result<Vec<_>, _>>()?;
    let mut operators = Vec::with_capacity(spec.operators.len());
    let side_outputs = declared_side_outputs(&spec, ctx.modules);
    for &i in &dataflow.order {
        let op = &spec.operators[i];
        let mut vertex = ctx.operator(op, &dataflow.operators[i])?;
        vertex.inputs =
            vertex_inputs(&format!("operator '{}'", op.uid), &dataflow.operators[i], &side_outputs).map_err(invalid)?;
        operators.push(vertex);
    }
    // A sink runs at the parallelism of what it reads (the first input, when several), each
    // subtask writing its own part; on the straight line, at the last operator's.
    let parallelism: HashMap<&str, u32> = sources
        .iter()
        .map(|v| (&*v.uid, v.parallelism))
        .chain(operators.iter().map(|v| (&*v.uid, v.parallelism)))
        .collect();
    let line =
        spec.operators.last().map_or(spec.parallelism, |op| parallelism.get(op.uid.as_str()).copied().unwrap_or(1));
    let sink_shapes: Vec<(Arc<str>, u32, Vec<VertexInput>)> = spec
        .sinks
        .iter()
        .zip(&dataflow.sinks)
        .map(|(sink, inputs)| {
            let first = inputs.first().and_then(|i| parallelism.get(i.from.as_str()).copied());
            let p = if sink.inputs.is_some() { first.unwrap_or(line) } else { line };
            let inputs = vertex_inputs(&format!("sink '{}'", sink.uid), inputs, &side_outputs)?;
            Ok((Arc::from(sink.uid.as_str()), p, inputs))
        })
        .collect::<Result<_, String>>()
        .map_err(invalid)?;
    // Every refusal before any sink is opened: opening one brings its directory to the output the
    // job resumes from, which a refused job must not do.
    let vertices = sources
        .iter()
        .map(|v| (&v.uid, v.parallelism, &v.inputs[..]))
        .chain(operators.iter().map(|v| (&v.uid, v.parallelism, &v.inputs[..])))
        .chain(sink_shapes.iter().map(|(uid, p, inputs)| (uid, *p, &inputs[..])));
    crate::runtime::check_size(vertices).map_err(invalid)?;
    if let Some(restore) = &ctx.restore {
        check_all_state_restored(&spec, restore).map_err(invalid)?;
    }
    let sinks = spec
        .sinks
        .iter()
        .zip(sink_shapes)
        .map(|(s, (_, parallelism, inputs))| ctx.sink(s, parallelism, inputs).map_err(invalid))
        .collect::<Result<_, _>>()?;
    Ok(JobGraph {
        name: spec.name,
        max_parallelism: spec.max_parallelism,
        attempt,
        sources,
        operators,
        sinks,
        checkpointing,
        positions: ctx.restore.as_ref().map(|r| r.positions().to_vec()).unwrap_or_default(),
    })
}

/// The checkpoint interval of a `[checkpointing]` table; zero means off.
pub(crate) fn checkpoint_interval(spec: &CheckpointingSpec) -> Result<Duration, String> {
    checkpoint_duration("interval", &spec.interval)
}

pub(super) fn checkpoint_duration(key: &str, value: &str) -> Result<Duration, String> {
    super::spec::duration(value).ok_or_else(|| {
        format!("[checkpointing] {key} \"{value}\" is not a duration of at most 365 days, such as \"1s\" or \"500ms\"")
    })
}

/// The run's checkpointing from an enabled `[checkpointing]` table; its barrier ids start past
/// `after`.
pub(super) fn checkpointing(
    spec: &CheckpointingSpec,
    (job, job_id): (&str, &str),
    max_parallelism: u32,
    (storage, incremental): (&Storage, bool),
    after: u64,
) -> Result<CheckpointConfig, String> {
    let optional =
        |key, value: &Option<String>, default| value.as_deref().map_or(Ok(default), |v| checkpoint_duration(key, v));
    let timeout = optional("timeout", &spec.timeout, Duration::from_secs(600))?;
    if timeout.is_zero() {
        return Err("[checkpointing] timeout must be longer than 0s".to_string());
    }
    if spec.retained == Some(0) {
        return Err("[checkpointing] retained must be at least 1".to_string());
    }
    if spec.max_concurrent == Some(0) {
        return Err("[checkpointing] max-concurrent must be at least 1".to_string());
    }
    // Barrier ids never repeat: past every stored checkpoint and the checkpoint or savepoint
    // the job starts from (a sink names its committed files by them).
    let stored = storage.checkpoints(job).map_err(|e| e.to_string())?.last().copied().unwrap_or(0);
    let first_id = stored.max(after) + 1;
    let retained = spec.retained.unwrap_or(1);
    let sink = StorageSink::new(storage.clone(), (job, job_id), max_parallelism, retained, incremental)?;
    Ok(CheckpointConfig {
        interval: checkpoint_interval(spec)?,
        exactly_once: spec.mode == CheckpointMode::ExactlyOnce,
        timeout,
        min_pause: optional("min-pause", &spec.min_pause, Duration::ZERO)?,
        max_concurrent: spec.max_concurrent.unwrap_or(1),
        tolerable_failures: spec.tolerable_failures.unwrap_or(0),
        first_id,
        sink: Arc::new(sink),
    })
}

/// What building the vertices of one job shares.
pub(super) struct Builder<'a> {
    /// Relative source and sink paths start here.
    base: PathBuf,
    label: String,
    modules: &'a HashMap<String, Arc<OperatorModule>>,
    parallelism: u32,
    max_parallelism: u32,
    /// The checkpoint the job resumes from, if any.
    restore: Option<Arc<Restore>>,
    /// State left in place by the previous run of the job (an upgrade), taken before `restore`.
    handover: Option<Arc<Handover>>,
    /// File sinks publish by two-phase commit: the job checkpoints.
    two_phase_sinks: bool,
    /// After an upgrade: how long sinks that cannot take output back hold it back.
    hold_output: Option<std::time::Duration>,
    /// The job's id: its file sinks name their files by it.
    job_id: &'a str,
    /// Where operators keep their keyed state.
    backends: Backends,
    /// What the module versions of operators with a canary served.
    versions: &'a super::canary::VersionCounts,
}

impl Builder<'_> {
    fn source(&self, s: &SourceSpec) -> Result<Vertex<dyn SourceFactory>, String> {
        let (factory, parallelism) = connectors::source(s, &self.base, self.parallelism)?;
        if s.rate.is_some_and(|r| !super::spec::RATE_RANGE.contains(&r)) {
            return Err(format!(
                "source '{}': `rate` must be a number of events per second from {} to {:e}",
                s.uid,
                super::spec::RATE_RANGE.start(),
                super::spec::RATE_RANGE.end()
            ));
        }
        check_parallelism(&format!("source '{}'", s.uid), parallelism, self.max_parallelism)?;
        let watermarks = super::event_time::watermarks(&format!("source '{}'", s.uid), s.watermarks.as_ref(), true)?;
        Ok(Vertex { uid: Arc::from(s.uid.as_str()), parallelism, inputs: Vec::new(), factory, watermarks })
    }

    /// Operator `op`, reading `inputs`.
    fn operator(&mut self, op: &OperatorSpec, inputs: &[Input]) -> Result<Vertex<dyn OperatorFactory>, JobError> {
        let file = self.label.clone();
        let invalid = |message: String| JobError::Invalid { file: file.clone(), message };
        let parallelism = op.parallelism.unwrap_or(self.parallelism);
        check_parallelism(&format!("operator '{}'", op.uid), parallelism, self.max_parallelism).map_err(invalid)?;
        let keyed = op.keyed();
        let (code, declared) = operator_code(op, self.modules).ok_or_else(|| match (&op.module, &op.builtin) {
            (Some(module), None) => {
                invalid(format!("operator '{}': module {module} was not resolved (a weir bug)", op.uid))
            }
            (None, Some(name)) => invalid(format!(
                "operator '{}': unknown builtin '{name}' (known: {})",
                op.uid,
                crate::builtin::NAMES.join(", ")
            )),
            _ => {
                invalid(format!("operator '{}': set exactly one of `module` (a .wasm component) and `builtin`", op.uid))
            }
        })?;
        self.check_saved_state(&op.uid, &code, &declared).map_err(invalid)?;
        let stable_code = (code, declared.clone());
        let restore = self.state_restore(&op.uid, declared);
        let factory: Box<dyn OperatorFactory> = match (&op.module, &op.builtin) {
            (Some(module), None) => {
                let limits = sandbox_limits(op).map_err(invalid)?;
                let config = serde_json::to_string(&op.config.clone().unwrap_or_default())
                    .map_err(|e| invalid(format!("operator '{}': `config` cannot be passed as JSON: {e}", op.uid)))?;
                let broadcast: Vec<bool> = inputs.iter().map(|i| i.partitioning == Partitioning::Broadcast).collect();
                let quarantine = self.quarantine(op, module).map_err(invalid)?;
                let wasm = |reference: &String, restore: Option<StateRestore>| {
                    let module = self.modules.get(reference).cloned().ok_or_else(|| {
                        invalid(format!("operator '{}': module {reference} was not resolved (a weir bug)", op.uid))
                    })?;
                    let factory =
                        WasmOperatorFactory::new(module, config.clone(), keyed, limits, self.backends.clone())
                            .reading_broadcast(broadcast.clone())
                            .quarantining(quarantine.clone());
                    Ok::<_, JobError>(match restore {
                        Some(restore) => factory.restoring(restore),
                        None => factory,
                    })
                };
                let stable = wasm(module, restore)?;
                match self.canary(op, stable_code).map_err(invalid)? {
                    None => Box::new(stable),
                    Some((canary, parts)) => {
                        let canary = match canary {
                            Some((reference, restore)) => Some(wasm(reference, restore)?),
                            None => None,
                        };
                        let (canary_end, saved) = parts;
                        let versions = (self.versions.lock())
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(op.uid.clone())
                            .or_insert_with(|| {
                                let max = self.max_parallelism;
                                Arc::new(CanaryFactory::versions(&stable, canary.as_ref(), canary_end, max))
                            })
                            .clone();
                        let parts =
                            Box::new(move |range: std::ops::Range<u32>| super::canary::parts(range, canary_end, saved));
                        let abort_if = Arc::new(super::canary::conditions(op).map_err(invalid)?);
                        Box::new(CanaryFactory::new((stable, canary), parts, versions, abort_if))
                    }
                }
            }
            (None, Some(name)) => {
                if op.config.is_some()
                    || op.on_error.is_some()
                    || op.call_deadline.is_some()
                    || op.memory_limit.is_some()
                    || op.state_limit.is_some()
                {
                    return Err(invalid(format!(
                        "operator '{}': builtin operators take no `config`, `on-error`, `call-deadline`, \
                         `memory-limit` or `state-limit`",
                        op.uid
                    )));
                }
                crate::builtin::factory(name, keyed, restore, self.backends.clone())
                    .ok_or_else(|| invalid(format!("operator '{}': unknown builtin '{name}'", op.uid)))?
            }
            _ => return Err(invalid(format!("operator '{}': neither a module nor a builtin", op.uid))),
        };
        let owner = format!("operator '{}'", op.uid);
        let watermarks = super::event_time::watermarks(&owner, op.watermarks.as_ref(), false).map_err(invalid)?;
        // Its inputs come from the job's graph.
        Ok(Vertex { uid: Arc::from(op.uid.as_str()), parallelism, inputs: Vec::new(), factory, watermarks })
    }

    /// The quarantine of operator `op` running `module`, when it sets failing events aside.
    fn quarantine(&self, op: &OperatorSpec, module: &str) -> Result<Option<Arc<Quarantine>>, String> {
        let Some(spec) = op.on_error.as_ref().filter(|_| op.quarantines()) else { return Ok(None) };
        let side_outputs = self.modules.get(module).map_or(0, |m| m.description.side_outputs.len());
        Ok(Some(Arc::new(Quarantine::new(&op.uid, side_outputs, spec)?)))
    }

    /// For operator `op` with a canary, or whose restored state a canary saved in part: the
    /// canary's module and the restore of its state, if it runs one, and where the canary's key
    /// groups end now and ended in the restored state. `None` for every other operator. A
    /// savepoint's state must be readable by the module that takes over each part of it:
    /// `stable` (the operator's own code and states) for the part its canary saved when that
    /// part shrank, the canary's for all of it.
    #[allow(clippy::type_complexity)] // each is named above
    fn canary<'s>(
        &self,
        op: &'s OperatorSpec,
        stable: (OperatorCode, Vec<StateDescriptor>),
    ) -> Result<Option<(Option<(&'s String, Option<StateRestore>)>, (u32, u32))>, String> {
        let canary_end = super::canary::checked(&op.uid, op.canary.as_ref(), self.max_parallelism)?;
        let saved = self.restore.as_ref().and_then(|r| r.canary(&op.uid)).map_or(0, |(_, end)| end);
        if canary_end == 0 && saved == 0 {
            return Ok(None);
        }
        let saved_canary = self.restore.as_ref().and_then(|r| r.saved_operator(&op.uid)?.canary.clone());
        if let Some(saved) = saved_canary.as_ref().filter(|saved| saved.key_groups > canary_end) {
            let before = (saved.module.clone(), saved.states.clone());
            super::checks::check_takes_over(&op.uid, before, &stable.0, &stable.1)?;
        }
        let Some(canary) = &op.canary else { return Ok(Some((None, (canary_end, saved)))) };
        let module = self.modules.get(&canary.module).ok_or(format!("operator '{}': canary not resolved", op.uid))?;
        let (code, declared) = super::checks::module_code(module, true);
        self.check_saved_state(&op.uid, &code, &declared)?;
        if let Some(saved) = saved_canary {
            super::checks::check_takes_over(&op.uid, (saved.module, saved.states), &code, &declared)?;
        }
        let restore = self.state_restore(&op.uid, declared);
        Ok(Some((Some((&canary.module, restore)), (canary_end, saved))))
    }

    /// A savepoint's state for operator `uid` must be readable by the code the operator runs now:
    /// every saved state declared again with the same kind and a schema version that can read it
    /// (see [`check_states`]). A saved state the code no longer declares is refused unless
    /// non-restored state is allowed.
    fn check_saved_state(&self, uid: &str, code: &OperatorCode, declared: &[StateDescriptor]) -> Result<(), String> {
        let Some(restore) = &self.restore else { return Ok(()) };
        let Some(saved) = restore.saved_operator(uid) else { return Ok(()) };
        let has_state = !saved.files.is_empty() && !restore.allows_non_restored_state();
        check_states(uid, saved, has_state, code, declared)
    }

    /// Fills operator `uid`'s state, which it declares as `declared`, from the checkpoint or
    /// savepoint the job starts from, or takes the backend its predecessor handed over. In place
    /// only when the code declares the saved states in the same order, so that their indices mean
    /// the same (their schema versions may differ: the operator migrates the entries); otherwise
    /// the savepoint's files are read, state by state name. The key groups a canary served were
    /// saved with its module's states.
    fn state_restore(&self, uid: &str, declared: Vec<StateDescriptor>) -> Option<StateRestore> {
        let restore = self.restore.clone()?;
        let saved_operator = restore.saved_operator(uid);
        let saved = saved_operator.map(|saved| saved.states.clone()).unwrap_or_default();
        let canary = saved_operator.and_then(|saved| saved.canary.clone());
        let handover = self.handover.clone();
        let uid = uid.to_string();
        Some(Arc::new(move |backends: &Backends, kinds: &[StateKind], range: std::ops::Range<u32>, subtask| {
            let saved = match &canary {
                Some(canary) if range.end <= canary.key_groups => &canary.states,
                _ => &saved,
            };
            let handed_over = handover.as_ref().filter(|_| StateDescriptor::same_states(saved, &declared));
            if let Some(state) = handed_over.and_then(|h| h.take(&uid, subtask, &range)) {
                let saved_versions = saved.iter().map(|s| Some(s.schema_version)).collect();
                let (backend, timers, broadcast) = (state.backend, state.timers, state.broadcast);
                return Ok(RestoredState { backend, saved_versions, timers, broadcast });
            }
            restore.restore_state(&uid, &declared, backends, kinds, range)
        }))
    }

    fn sink(
        &self,
        s: &SinkSpec,
        parallelism: u32,
        inputs: Vec<VertexInput>,
    ) -> Result<Vertex<dyn SinkFactory>, String> {
        let exactly = connectors::Exactly {
            two_phase: self.two_phase_sinks,
            restore: self.restore.as_deref(),
            job_id: self.job_id,
            hold_output: self.hold_output,
        };
        let factory = connectors::sink(s, &self.base, &exactly)?;
        Ok(Vertex { uid: Arc::from(s.uid.as_str()), parallelism, inputs, factory, watermarks: None })
    }
}

/// The checks of the job's graph (`dataflow`, resolved from `spec`) that need its operators'
/// modules (the inputs and side outputs they declare, the contract they were built against), made
/// when the job is planned: before any directory is claimed.
pub(super) fn check_graph_modules(
    spec: &JobSpec,
    dataflow: &super::graph::Dataflow,
    modules: &HashMap<String, Arc<OperatorModule>>,
) -> Result<(), String> {
    let side_outputs = declared_side_outputs(spec, modules);
    for (op, inputs) in spec.operators.iter().zip(&dataflow.operators) {
        if let Some(module) = op.module.as_ref().and_then(|m| modules.get(m)) {
            check_module_inputs(&op.uid, module, inputs, op.keyed())?;
        }
        vertex_inputs(&format!("operator '{}'", op.uid), inputs, &side_outputs)?;
    }
    for (sink, inputs) in spec.sinks.iter().zip(&dataflow.sinks) {
        vertex_inputs(&format!("sink '{}'", sink.uid), inputs, &side_outputs)?;
    }
    check_quarantines(spec, dataflow, modules)
}

/// An operator that sets failing events aside needs a module (a builtin does not fail on an
/// event), a module that does not name a side output `quarantine` itself, and a reader of its
/// `quarantine` side output: set-aside events are never dropped unseen.
fn check_quarantines(
    spec: &JobSpec,
    dataflow: &super::graph::Dataflow,
    modules: &HashMap<String, Arc<OperatorModule>>,
) -> Result<(), String> {
    use crate::wasm::quarantine::SIDE_OUTPUT;
    let readers = dataflow.operators.iter().chain(&dataflow.sinks).flatten();
    for op in spec.operators.iter().filter(|op| op.quarantines()) {
        let uid = &op.uid;
        let Some(module) = op.module.as_ref().and_then(|m| modules.get(m)) else {
            return Err(format!(
                "operator '{uid}': `on-error = \"quarantine\"` is for operators with a `module`; a builtin has no \
                 guest calls to fail"
            ));
        };
        if module.description.side_outputs.iter().any(|s| s == SIDE_OUTPUT) {
            return Err(format!(
                "operator '{uid}': its module declares a side output named '{SIDE_OUTPUT}', the name `on-error = \
                 \"quarantine\"` gives the events it sets aside: rename the module's side output"
            ));
        }
        if !readers.clone().any(|i| &i.from == uid && i.output.as_deref() == Some(SIDE_OUTPUT)) {
            return Err(format!(
                "operator '{uid}': `on-error = \"quarantine\"` sets failing events aside on its side output \
                 '{SIDE_OUTPUT}', and nothing reads it: add a sink with `inputs = [{{ from = \"{uid}.{SIDE_OUTPUT}\" }}]` (a file \
                 sink, a Kafka topic), so that no event is dropped unseen"
            ));
        }
    }
    Ok(())
}

/// Each operator's side outputs, by its uid, as its module declares them (builtins have none),
/// then `quarantine` when it sets failing events aside (see [`crate::wasm::quarantine`]).
fn declared_side_outputs<'a>(
    spec: &'a JobSpec,
    modules: &'a HashMap<String, Arc<OperatorModule>>,
) -> HashMap<&'a str, Vec<&'a str>> {
    spec.operators
        .iter()
        .filter_map(|op| {
            let declared = &modules.get(op.module.as_ref()?)?.description.side_outputs;
            let quarantine = op.quarantines().then_some(crate::wasm::quarantine::SIDE_OUTPUT);
            Some((op.uid.as_str(), declared.iter().map(String::as_str).chain(quarantine).collect()))
        })
        .collect()
}

/// The runtime's inputs of vertex `what`, as the job's graph resolved them, each side output
/// found among those its operator's module declares (`side_outputs`, by operator uid).
fn vertex_inputs(
    what: &str,
    inputs: &[Input],
    side_outputs: &HashMap<&str, Vec<&str>>,
) -> Result<Vec<VertexInput>, String> {
    let resolve = |i: &Input| {
        let side_output = match &i.output {
            None => None,
            Some(name) => {
                let declared = side_outputs.get(i.from.as_str()).map_or(&[][..], Vec::as_slice);
                let k = declared.iter().position(|d| d == name).ok_or_else(|| {
                    if name == crate::wasm::quarantine::SIDE_OUTPUT {
                        return format!(
                            "{what}: reads side output '{name}' of operator '{}', which sets no events aside: set \
                             `on-error = \"quarantine\"` on it",
                            i.from
                        );
                    }
                    let known = match declared {
                        [] => "it declares none".to_string(),
                        names => format!("it declares {}", names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")),
                    };
                    format!("{what}: reads side output '{name}' of operator '{}', which has no side output '{name}' ({known} in its `describe`)", i.from)
                })?;
                Some(SideOutput { index: k as u8 + 1, name: Arc::from(name.as_str()) })
            }
        };
        Ok(VertexInput { from: Arc::from(i.from.as_str()), side_output, partitioning: i.partitioning })
    };
    inputs.iter().map(resolve).collect()
}

/// A module's `describe` may name its inputs (0.4.0): then the job file gives it as many, in that
/// order. A keyed operator reading a broadcast stream keeps it in broadcast state, which modules
/// have from 0.4.0.
pub(super) fn check_module_inputs(
    uid: &str,
    module: &OperatorModule,
    inputs: &[Input],
    keyed: bool,
) -> Result<(), String> {
    let declared = &module.description.inputs;
    if module.has_graph_inputs() && inputs.len() > 255 {
        return Err(format!("operator '{uid}': reads {} inputs; an operator reads at most 255", inputs.len()));
    }
    if !declared.is_empty() && declared.len() != inputs.len() {
        let names = declared.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
        let read = inputs.iter().map(|i| format!("'{}'", i.name())).collect::<Vec<_>>().join(", ");
        return Err(format!(
            "operator '{uid}': its module declares {} inputs ({names}) and the job file gives it {} ({read}); \
             name one input per declared input in `inputs`, in the module's order",
            declared.len(),
            inputs.len()
        ));
    }
    if let Some(broadcast) = inputs.iter().find(|i| keyed && i.partitioning == Partitioning::Broadcast)
        && !module.has_graph_inputs()
    {
        return Err(format!(
            "operator '{uid}': reads '{}' by broadcast beside its keyed inputs, which needs broadcast state, and its \
             module was built against weir:operator@{}: rebuild it with an SDK for weir:operator@0.4.0",
            broadcast.name(),
            module.contract_version()
        ));
    }
    Ok(())
}

/// State the job starts from must all go somewhere: positions to sources, state to operators,
/// unless non-restored state is allowed.
pub(super) fn check_all_state_restored(spec: &JobSpec, restore: &Restore) -> Result<(), String> {
    if restore.allows_non_restored_state() {
        return Ok(());
    }
    let what = restore.describe();
    let hint = "pass --allow-non-restored-state to start without it";
    if let Some(uid) = restore.operator_uids().into_iter().find(|uid| !spec.operators.iter().any(|o| o.uid == *uid)) {
        return Err(format!("{what} holds state of operator '{uid}', which this job does not have; {hint}"));
    }
    if let Some(uid) = restore.source_uids().into_iter().find(|uid| !spec.sources.iter().any(|s| s.uid == *uid)) {
        return Err(format!("{what} holds the position of source '{uid}', which this job does not have; {hint}"));
    }
    Ok(())
}

/// The longest `call-deadline`: a guest call that needs longer is stuck.
pub(super) const MAX_CALL_DEADLINE: Duration = Duration::from_secs(3600);

pub(crate) fn sandbox_limits(op: &OperatorSpec) -> Result<SandboxLimits, String> {
    let mut limits = SandboxLimits::default();
    if let Some(d) = &op.call_deadline {
        limits.call_deadline = super::spec::duration(d).filter(|d| *d > Duration::ZERO && *d <= MAX_CALL_DEADLINE).ok_or_else(|| {
            format!(
                "operator '{}': call-deadline \"{d}\" is not a duration between 1ms and 1h, such as \"500ms\" or \"10s\"",
                op.uid
            )
        })?;
    }
    if let Some(m) = &op.memory_limit {
        limits.memory_limit = size_setting(&op.uid, "memory-limit", m, "64MiB")?;
    }
    if let Some(m) = &op.state_limit {
        limits.state_limit = size_setting(&op.uid, "state-limit", m, "4GiB")?;
    }
    Ok(limits)
}

/// Operator `uid`'s size setting `key` = `value`: at least 1 MiB (`example` shows one).
pub(super) fn size_setting(uid: &str, key: &str, value: &str, example: &str) -> Result<usize, String> {
    let bytes = value.parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64()).filter(|&b| b >= 1 << 20);
    let bytes = bytes.ok_or_else(|| {
        format!("operator '{uid}': {key} \"{value}\" is not a size of at least 1MiB, such as \"{example}\"")
    })?;
    Ok(usize::try_from(bytes).unwrap_or(usize::MAX))
}
