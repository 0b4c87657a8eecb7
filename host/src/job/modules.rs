//! Where a job's `module = "…"` references are loaded from: files (`weir run`) or a server's
//! module store (`control::StoreModules`).
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::wasm::{ModuleError, OperatorModule, WasmEngine};

/// Why a job's `module = "…"` cannot be used.
pub enum ModuleRefError {
    /// The module was found but cannot be used.
    Module(ModuleError),
    /// The reference itself is wrong here; the message says what to do.
    Reference(String),
}

impl std::fmt::Display for ModuleRefError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleRefError::Module(problem) => write!(f, "{problem}"),
            ModuleRefError::Reference(message) => f.write_str(message),
        }
    }
}

/// Where the `module = "…"` references of a job are loaded from.
pub trait Modules {
    /// The module `reference` names.
    fn resolve(&mut self, reference: &str) -> Result<Arc<OperatorModule>, ModuleRefError>;
}

/// Modules named by path, relative to the job file (`weir run`). Each file is loaded once, however
/// many operators name it.
pub struct ModuleFiles<'a> {
    base: PathBuf,
    engine: &'a WasmEngine,
    loaded: HashMap<PathBuf, Arc<OperatorModule>>,
}

impl<'a> ModuleFiles<'a> {
    /// Modules relative to `base`, compiled by `engine`.
    pub fn new(base: PathBuf, engine: &'a WasmEngine) -> Self {
        ModuleFiles { base, engine, loaded: HashMap::new() }
    }
}

impl Modules for ModuleFiles<'_> {
    fn resolve(&mut self, reference: &str) -> Result<Arc<OperatorModule>, ModuleRefError> {
        if reference.starts_with("sha256:") {
            return Err(ModuleRefError::Reference(format!(
                "`module = \"{reference}\"` names a module in a server's module store; \
                 `weir run` needs a path to a .wasm file"
            )));
        }
        let path = self.base.join(reference);
        if let Some(module) = self.loaded.get(&path) {
            return Ok(module.clone());
        }
        let module = Arc::new(self.engine.load_file(&path).map_err(ModuleRefError::Module)?);
        self.loaded.insert(path, module.clone());
        Ok(module)
    }
}

/// No modules beyond those a job already runs: for a change of a running job made without a
/// request (a canary aborted by its condition), which needs no other.
pub struct NoOtherModules;

impl Modules for NoOtherModules {
    fn resolve(&mut self, reference: &str) -> Result<Arc<OperatorModule>, ModuleRefError> {
        Err(ModuleRefError::Reference(format!("module {reference} is not one the job runs")))
    }
}
