//! A job's `[state]` table, checked: which backend its operators keep their keyed state in, and
//! for RocksDB where and with how much memory.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::spec::{BackendType, StateSpec};
use crate::state::{Backends, RocksDbBackends};

/// Where RocksDB keeps its live databases by default, relative to the job file.
pub const DEFAULT_LOCAL_DIR: &str = "weir-data/rocksdb";

/// The memory a job's RocksDB databases share by default.
const DEFAULT_MANAGED_MEMORY: usize = 256 << 20;

/// A checked `[state]` table.
#[derive(Debug, Clone)]
pub(super) enum StateSettings {
    /// In memory.
    Memory,
    /// RocksDB: databases under `dir`, sharing `managed_memory` bytes, checkpointed
    /// `incremental`ly or not.
    RocksDb { dir: PathBuf, managed_memory: usize, incremental: bool },
}

impl StateSettings {
    /// Checks `spec`; relative paths start at `base`, and `default_dir` is where databases go
    /// when the table names no `local-dir`.
    pub(super) fn from_spec(spec: &StateSpec, base: &Path, default_dir: &str) -> Result<Self, String> {
        if spec.backend == BackendType::Memory {
            let rocksdb_only = [
                ("local-dir", spec.local_dir.is_some()),
                ("managed-memory", spec.managed_memory.is_some()),
                ("incremental", spec.incremental == Some(true)),
            ];
            if let Some(key) = rocksdb_only.iter().find_map(|(key, set)| set.then_some(key)) {
                return Err(format!(
                    "[state] {key} is a setting of the rocksdb backend; set backend = \"rocksdb\" or remove it"
                ));
            }
            return Ok(StateSettings::Memory);
        }
        let managed_memory = match &spec.managed_memory {
            None => DEFAULT_MANAGED_MEMORY,
            Some(text) => text
                .parse::<bytesize::ByteSize>()
                .ok()
                .map(|b| b.as_u64())
                .filter(|&b| b >= 16 << 20)
                .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
                .ok_or_else(|| {
                    format!("[state] managed-memory \"{text}\" is not a size of at least 16MiB, such as \"256MiB\"")
                })?,
        };
        let dir = base.join(spec.local_dir.as_deref().unwrap_or(default_dir));
        Ok(StateSettings::RocksDb { dir, managed_memory, incremental: spec.incremental.unwrap_or(false) })
    }

    /// Whether checkpoints are incremental.
    pub(super) fn incremental(&self) -> bool {
        matches!(self, StateSettings::RocksDb { incremental: true, .. })
    }

    /// Whether its backend restores native snapshots (RocksDB's).
    pub(super) fn reads_native(&self) -> bool {
        matches!(self, StateSettings::RocksDb { .. })
    }

    /// The backends of one run of job `job_id` (RocksDB: in a directory of the job's own).
    pub(super) fn backends(&self, job_id: &str) -> Result<Backends, String> {
        match self {
            StateSettings::Memory => Ok(Backends::Memory),
            StateSettings::RocksDb { dir, managed_memory, .. } => {
                let databases = RocksDbBackends::new(dir, job_id, *managed_memory)
                    .map_err(|e| format!("[state] local-dir: {e}"))?;
                Ok(Backends::RocksDb(Arc::new(databases)))
            }
        }
    }
}
