//! The wasmtime engine weir runs operators on, and loading a module: validate, check the
//! contract, compile once (cached on disk by content hash), link, and read its description.
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, OptLevel, Store};

use super::contract::{self, CONTRACT, CONTRACT_VERSION, Contract, ContractCheck};
use super::guest::GuestPre;
use super::host::HostState;
use crate::state::{StateDescriptor, StateKind, timers_descriptor};

/// Bytes in MiB.
fn mib(bytes: usize) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// What the host offers a guest to import, for link errors.
const PROVIDED: &str = "weir:operator/state and /log, and WASI 0.2's wasi:io, wasi:clocks, wasi:random, \
                        wasi:cli, wasi:filesystem (no directories) and wasi:sockets (no network)";

/// Why a component cannot be linked, saying what it imports that the host lacks, what the host
/// provides and what to do: wasmtime's error chain repeats itself ("resource implementation is
/// missing" twice), so each distinct message is kept once.
fn link_error(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if !parts.iter().any(|p| p.contains(&cause)) {
            parts.push(cause);
        }
    }
    format!(
        "{}; this host provides {PROVIDED}: build the module without that import (componentize-js, \
         for one, imports wasi:http unless told `--disable http`)",
        parts.join(": ")
    )
}

/// The longest name, version or state name an operator may describe itself with, in bytes: they
/// are stored with every module, job and savepoint, and shown in every listing.
const MAX_DESCRIBED: usize = 128;
/// The most states an operator may declare.
const MAX_STATES: usize = 1000;

/// Refuses a name, version or state name (`what`) longer than [`MAX_DESCRIBED`] bytes.
fn check_described(what: &str, text: &str) -> Result<(), String> {
    if text.len() > MAX_DESCRIBED {
        let start: String = text.chars().take(24).collect();
        return Err(format!(
            "it describes itself with a {what} of {} bytes (\"{}…\"); at most {MAX_DESCRIBED} bytes are allowed",
            text.len(),
            start.escape_debug()
        ));
    }
    Ok(())
}

/// The most inputs, and the most side outputs, an operator declares: frames name them in a byte.
const MAX_STREAMS: usize = 255;

/// The longest `describe` may take: it only returns a description.
const DESCRIBE_DEADLINE: Duration = Duration::from_secs(10);

/// How often the epoch advances; call deadlines are counted in these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a module cannot be used, naming the module (its file or hash).
#[derive(Debug, thiserror::Error)]
#[error("module {module} {problem}")]
pub struct ModuleError {
    /// The file or hash at fault.
    pub module: String,
    /// What is wrong with it.
    pub problem: ModuleProblem,
}

/// What is wrong with a module.
#[derive(Debug, thiserror::Error)]
pub enum ModuleProblem {
    /// The file could not be read.
    #[error("cannot be read: {0}")]
    Read(String),
    /// Not WebAssembly at all.
    #[error("is not a WebAssembly file (it does not start with the bytes \\0asm)")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "is a core WebAssembly module, not a component: build it for the wasm32-wasip2 target, or make \
         it a component with weir's world in it: `wasm-tools component embed wit --world operator-world \
         MODULE.wasm -o embedded.wasm`, then `wasm-tools component new embedded.wasm -o COMPONENT.wasm` \
         (a wasip1 module also needs `--adapt wasi_snapshot_preview1.reactor.wasm`); or link it with \
         `wasm-component-ld --component-type` and the world's component-type object (README: \
         \"In any other language\")"
    )]
    CoreModule,
    /// Malformed or truncated.
    #[error("is not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// Built against another contract version.
    #[error(
        "was built against {CONTRACT}@{0}, but this weir supports {CONTRACT}@{CONTRACT_VERSION}, @0.3.0 and @0.2.0; \
         rebuild it against this weir's wit/"
    )]
    ContractVersion(String),
    /// Not a weir operator; lists what it exports.
    #[error("is not a weir operator: it does not export {CONTRACT}/operator@{CONTRACT_VERSION} (it exports: {0})")]
    NotAnOperator(String),
    /// A component that exports nothing: what a core module made a component without its world.
    #[error(
        "is not a weir operator: it exports nothing, as a component made of a core module without weir's \
         world embedded does: `wasm-tools component embed wit --world operator-world` the core module first, \
         or link it with `wasm-component-ld --component-type wit/operator.wit`"
    )]
    ExportsNothing,
    /// Imports something the host does not provide.
    #[error("cannot be linked: {0}")]
    Link(String),
    /// `describe` trapped or returned an unusable description.
    #[error("failed in describe(): {0}")]
    Describe(String),
}

/// What an operator module says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Description {
    /// Operator name.
    pub name: String,
    /// Operator version.
    pub version: String,
    /// Declared states, in order.
    pub states: Vec<StateDescriptor>,
    /// The names of its inputs, matched by position to the job file's (0.4.0; empty: its inputs
    /// are one stream to it).
    pub inputs: Vec<String>,
    /// The names of its side outputs (0.4.0), read in job files as `"uid.name"`.
    pub side_outputs: Vec<String>,
}

impl Description {
    /// The kinds of the declared states, in order.
    pub fn kinds(&self) -> Vec<StateKind> {
        self.states.iter().map(|s| s.kind).collect()
    }
}

/// A validated, compiled and linked operator module, ready to instantiate per subtask.
pub struct OperatorModule {
    /// Hex SHA-256 of the module bytes: its identity.
    pub sha256: String,
    /// Its self-description.
    pub description: Description,
    pub(crate) pre: GuestPre,
    pub(crate) engine: Engine,
}

impl OperatorModule {
    /// The version of the contract it was built against ("0.3.0").
    pub fn contract_version(&self) -> &'static str {
        self.pre.contract().version()
    }

    /// Whether it can set timers: built against 0.3.0 or later.
    pub fn has_timers(&self) -> bool {
        self.pre.contract() >= Contract::V3
    }

    /// Whether its frames tell its inputs apart and it has side outputs and broadcast state:
    /// built against 0.4.0 or later.
    pub fn has_graph_inputs(&self) -> bool {
        self.pre.contract() >= Contract::V4
    }

    /// The states its subtasks keep: the declared ones, then, when its input is `keyed` and it can
    /// set timers, the host's timers (see [`crate::state::TimerQueue`]).
    pub fn states(&self, keyed: bool) -> Vec<StateDescriptor> {
        let mut states = self.description.states.clone();
        if keyed && self.has_timers() {
            states.push(timers_descriptor());
        }
        states
    }

    /// How reports name it: name, version and the start of its SHA-256.
    pub fn label(&self) -> String {
        let d = &self.description;
        format!("{} {} ({})", d.name, d.version, &self.sha256[..12.min(self.sha256.len())])
    }
}

/// The engine shared by every operator of a process, with the thread that advances its epoch.
pub struct WasmEngine {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl WasmEngine {
    /// An engine caching compiled modules in `cache_dir` (none: compile every time).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, String> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| format!("cannot create the wasm engine: {e}"))?;

        let mut linker = Linker::new(&engine);
        super::wasi::add_to_linker(&mut linker).map_err(|e| format!("cannot link WASI: {e}"))?;
        super::host::add_to_linker(&mut linker).map_err(|e| format!("cannot link weir imports: {e}"))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (weak, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|e| format!("cannot start the epoch ticker: {e}"))?;
        Ok(WasmEngine { engine, linker, cache_dir, ticker_stop })
    }

    /// Loads the module at `path`.
    pub fn load_file(&self, path: &Path) -> Result<OperatorModule, ModuleError> {
        let module = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => self.load(&bytes, &module),
            Err(e) => Err(ModuleError { module, problem: ModuleProblem::Read(e.to_string()) }),
        }
    }

    /// Validates, compiles (or takes from the cache), links and describes a module; `module` names
    /// it in errors.
    pub fn load(&self, bytes: &[u8], module: &str) -> Result<OperatorModule, ModuleError> {
        let fail = |problem| ModuleError { module: module.to_string(), problem };
        // Preamble: magic, then a 16-bit version and a 16-bit layer (0 core module, 1 component).
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(fail(ModuleProblem::NotWasm));
        }
        if bytes[6..8] == [0, 0] {
            return Err(fail(ModuleProblem::CoreModule));
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = self.compile(bytes, &sha256, module).map_err(|e| fail(ModuleProblem::Invalid(e)))?;
        let contract = match contract::check(&self.engine, &component) {
            ContractCheck::Compatible(contract) => contract,
            ContractCheck::OtherVersion(version) => {
                return Err(fail(ModuleProblem::ContractVersion(version)));
            }
            ContractCheck::NotAnOperator(exports) => {
                if exports.is_empty() {
                    return Err(fail(ModuleProblem::ExportsNothing));
                }
                return Err(fail(ModuleProblem::NotAnOperator(exports.join(", "))));
            }
        };
        let link = |e: wasmtime::Error| fail(ModuleProblem::Link(link_error(&e)));
        let pre = GuestPre::new(contract, self.linker.instantiate_pre(&component).map_err(link)?).map_err(link)?;
        let description = self.describe(&pre).map_err(|e| fail(ModuleProblem::Describe(e)))?;
        Ok(OperatorModule { sha256, description, pre, engine: self.engine.clone() })
    }

    /// Compiles a component, or loads the machine code compiled for the same bytes and engine
    /// settings earlier. Cached artifacts are written only by this function, atomically.
    fn compile(&self, bytes: &[u8], sha256: &str, module: &str) -> Result<Component, String> {
        // A large component (an interpreter inside) takes seconds to compile: say so, and how long.
        let compile = || {
            let started = std::time::Instant::now();
            tracing::info!("compiling {module} ({:.1} MiB); this happens once per module", mib(bytes.len()));
            let component = Component::new(&self.engine, bytes).map_err(|e| format!("{e:#}"));
            if component.is_ok() {
                tracing::info!("compiled {module} in {:.1} s", started.elapsed().as_secs_f64());
            }
            component
        };
        let Some(dir) = &self.cache_dir else { return compile() };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        let path = dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish()));
        if path.exists() {
            // SAFETY: the file was written by `serialize` below for this engine configuration
            // (the name carries the content hash and the engine's compatibility hash), into the
            // user's own cache directory.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!("ignoring unreadable compiled module {}: {e}", path.display()),
            }
        }
        let component = compile()?;
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let serialized = component.serialize().map_err(std::io::Error::other)?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, serialized)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::warn!("cannot cache the compiled module in {}: {e}", dir.display());
        }
        Ok(component)
    }

    fn describe(&self, pre: &GuestPre) -> Result<Description, String> {
        let mut store = Store::new(&self.engine, HostState::for_describe());
        store.limiter(|s| &mut s.limits);
        super::operator::watch(&mut store);
        super::operator::arm(&mut store, DESCRIBE_DEADLINE);
        let limits = super::SandboxLimits { call_deadline: DESCRIBE_DEADLINE, ..Default::default() };
        // Shown as "failed in describe(): …", which names the call already.
        let output = store.data().output.clone();
        let failed = |e: wasmtime::Error| {
            let message = super::operator::call_error("describe()", &e, &limits, &output);
            message.strip_prefix("describe() failed: ").map(str::to_string).unwrap_or(message)
        };
        let instance = pre.instantiate(&mut store).map_err(failed)?;
        let d = instance.describe(&mut store).map_err(failed)?;
        let states = d.states;
        if let Some(s) = states.iter().find(|s| s.time_to_live == Some(0)) {
            return Err(format!("state '{}' declares a time-to-live of 0 ms; declare at least 1 ms, or none", s.name));
        }
        check_described("name", &d.name)?;
        check_described("version", &d.version)?;
        if states.len() > MAX_STATES {
            return Err(format!("it declares {} states; an operator declares at most {MAX_STATES}", states.len()));
        }
        let mut names = std::collections::HashSet::new();
        for s in &states {
            check_described("state name", &s.name)?;
            if s.name.starts_with("weir.") {
                return Err(format!("state '{}': names starting with `weir.` are the host's own", s.name));
            }
            if !names.insert(&s.name) {
                return Err(format!("state '{}' is declared twice", s.name));
            }
            if let Some(v) = s.migrates_from.iter().find(|&&v| v >= s.schema_version) {
                return Err(format!(
                    "state '{}' declares a migration from schema version {v}, which is not older than its \
                     schema version {}",
                    s.name, s.schema_version
                ));
            }
        }
        if let Some(s) = states.iter().find(|s| s.kind == StateKind::Broadcast && s.time_to_live.is_some()) {
            return Err(format!("broadcast state '{}' declares a time-to-live; only keyed state expires", s.name));
        }
        for (what, names) in [("inputs", &d.inputs), ("side outputs", &d.side_outputs)] {
            if names.len() > MAX_STREAMS {
                return Err(format!("it declares {} {what}; an operator declares at most {MAX_STREAMS}", names.len()));
            }
            let mut seen = std::collections::HashSet::new();
            for name in names {
                check_described(what, name)?;
                if name.is_empty() || name.contains('.') || !seen.insert(name) {
                    return Err(format!(
                        "{what}: '{name}' is empty, has a '.' in it or is declared twice; name each once, without dots"
                    ));
                }
            }
        }
        let (inputs, side_outputs) = (d.inputs, d.side_outputs);
        Ok(Description { name: d.name, version: d.version, states, inputs, side_outputs })
    }
}
