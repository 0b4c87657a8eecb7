//! The module store: uploaded components, content-addressed by SHA-256 under
//! `<data-dir>/modules/`, validated and compiled once at upload (the engine caches the machine
//! code under `<data-dir>/compiled/`).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{lock, write_atomically};
use crate::job::{ModuleRefError, Modules};
use crate::runtime::now_ms;
use crate::state::StateDescriptor;
use crate::wasm::{ModuleError, OperatorModule, WasmEngine};

/// What the store knows of a module.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ModuleInfo {
    /// Hex SHA-256 of the module bytes.
    pub sha256: String,
    /// The operator's name, from its self-description.
    pub name: String,
    /// The operator's version.
    pub version: String,
    /// Declared states.
    pub states: Vec<StateDescriptor>,
    /// Size in bytes.
    pub size: u64,
    /// Upload time, milliseconds since the Unix epoch.
    pub uploaded_at: u64,
}

/// Uploaded modules.
pub struct ModuleStore {
    dir: PathBuf,
    engine: Arc<WasmEngine>,
    infos: Mutex<BTreeMap<String, ModuleInfo>>,
    loaded: Mutex<BTreeMap<String, Arc<OperatorModule>>>,
}

impl ModuleStore {
    /// Opens (creating if needed) the store in `dir`, listing the modules it already holds.
    /// The directory is created with the first upload.
    pub fn open(dir: PathBuf, engine: Arc<WasmEngine>) -> std::io::Result<Self> {
        let mut infos = BTreeMap::new();
        let entries = match std::fs::read_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            entries => Some(entries?),
        };
        for entry in entries.into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                match std::fs::read(&path).map(|b| serde_json::from_slice::<ModuleInfo>(&b)) {
                    Ok(Ok(info)) => {
                        infos.insert(info.sha256.clone(), info);
                    }
                    _ => tracing::warn!("ignoring unreadable module record {}", path.display()),
                }
            }
        }
        Ok(ModuleStore { dir, engine, infos: Mutex::new(infos), loaded: Mutex::new(BTreeMap::new()) })
    }

    /// Validates, compiles and stores a module. The same bytes uploaded again return the stored
    /// record without compiling anything.
    pub fn upload(&self, bytes: &[u8]) -> Result<ModuleInfo, ModuleError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Some(info) = lock(&self.infos).get(&sha256) {
            return Ok(info.clone());
        }
        let module = self.engine.load(bytes, &format!("upload ({} bytes)", bytes.len()))?;
        let info = ModuleInfo {
            sha256: sha256.clone(),
            name: module.description.name.clone(),
            version: module.description.version.clone(),
            states: module.description.states.clone(),
            size: bytes.len() as u64,
            uploaded_at: now_ms(),
        };
        let store_error = |e: std::io::Error| ModuleError {
            module: format!("sha256:{sha256}"),
            problem: crate::wasm::ModuleProblem::Read(format!("cannot be stored in {}: {e}", self.dir.display())),
        };
        std::fs::create_dir_all(&self.dir).map_err(store_error)?;
        write_atomically(&self.dir.join(format!("{sha256}.wasm")), bytes).map_err(store_error)?;
        let record = serde_json::to_vec_pretty(&info).unwrap_or_default();
        write_atomically(&self.dir.join(format!("{sha256}.json")), &record).map_err(store_error)?;
        lock(&self.loaded).insert(sha256.clone(), Arc::new(module));
        lock(&self.infos).insert(sha256, info.clone());
        Ok(info)
    }

    /// Every stored module, by hash.
    pub fn list(&self) -> Vec<ModuleInfo> {
        lock(&self.infos).values().cloned().collect()
    }

    /// The module with this hex SHA-256, loaded (from the compile cache) on first use.
    fn get(&self, sha256: &str) -> Result<Arc<OperatorModule>, ModuleRefError> {
        if let Some(module) = lock(&self.loaded).get(sha256) {
            return Ok(module.clone());
        }
        if !lock(&self.infos).contains_key(sha256) {
            return Err(ModuleRefError::Reference(format!(
                "no module sha256:{sha256} in this server's module store; upload it with `weir modules upload FILE`"
            )));
        }
        let module =
            Arc::new(self.engine.load_file(&self.dir.join(format!("{sha256}.wasm"))).map_err(ModuleRefError::Module)?);
        lock(&self.loaded).insert(sha256.to_string(), module.clone());
        Ok(module)
    }
}

/// Resolves a submitted job's `module = "sha256:<hex>"` references against a store.
pub(crate) struct StoreModules<'a>(pub(crate) &'a ModuleStore);

impl Modules for StoreModules<'_> {
    fn resolve(&mut self, reference: &str) -> Result<Arc<OperatorModule>, ModuleRefError> {
        match reference.strip_prefix("sha256:") {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                self.0.get(&hex.to_ascii_lowercase())
            }
            Some(_) => Err(ModuleRefError::Reference(format!(
                "`module = \"{reference}\"` is not a sha256: reference (64 hex digits expected)"
            ))),
            None => Err(ModuleRefError::Reference(format!(
                "`module = \"{reference}\"` is a path, and a submitted job may only name uploaded modules as \
                 sha256:<hex>; `weir submit` uploads the modules a job file names and rewrites them for you"
            ))),
        }
    }
}
