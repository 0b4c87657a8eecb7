//! Savepoints in the format of `docs/savepoint-format.md`, their state canonical (the default)
//! or native ([`SavepointFormat`]): [`SavepointSink`] writes a running job's savepoint into its
//! own directory; [`SavepointMetadata`] is its `_metadata`.
//! Reading one back for a restore is [`super::Restore::savepoint`].
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::storage::{Storage, StorageError};
use super::stored::{self, Form};
use super::{checked, paths};
use crate::runtime::{CheckpointSink, Completed, SinkCommitted, SourcePosition, StateFile, StateSnapshot, StoredState};
use crate::state::StateDescriptor;

/// `format` of a savepoint's `_metadata`.
pub const FORMAT: &str = "weir-savepoint";
/// `format-version` of the savepoints this weir writes: 3 may hold the host's `weir.timers` state
/// (docs/savepoint-format.md), 2 stores source positions as opaque hex, 1 as numbers.
pub const FORMAT_VERSION: u32 = 3;

/// The `format-version`s this weir reads (a position stored as a number is read as one).
pub const FORMAT_VERSIONS_READ: std::ops::RangeInclusive<u32> = 1..=FORMAT_VERSION;

/// The code an operator ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OperatorCode {
    /// A Wasm component.
    Module {
        /// Hex SHA-256 of the component.
        sha256: String,
        /// The name it describes itself with.
        name: String,
        /// The version it describes itself with.
        version: String,
    },
    /// An operator compiled into the host.
    Builtin {
        /// Its name.
        builtin: String,
    },
}

impl std::fmt::Display for OperatorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OperatorCode::Module { name, version, sha256 } => {
                write!(f, "{name} {version} (sha256:{})", &sha256[..sha256.len().min(12)])
            }
            OperatorCode::Builtin { builtin } => write!(f, "builtin {builtin}"),
        }
    }
}

/// One operator subtask's state in a savepoint: a canonical state file, or (native savepoints)
/// its database's files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SavepointFile {
    /// The subtask that wrote it.
    pub subtask: u32,
    /// The key groups it covers.
    pub key_groups: Range<u32>,
    /// Its file or files, in the savepoint's directory.
    #[serde(flatten)]
    pub stored: StoredState,
    /// The operator's broadcast state, recorded by subtask 0 alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<crate::state::broadcast::SavedBroadcast>,
    /// Written by the operator's canary module (its SHA-256; see [`SavedCanary`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
}

/// The form of a savepoint's state: canonical (the default: any backend, any parallelism) or
/// native (a RocksDB job's database files: faster to take and restore, into RocksDB only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SavepointFormat {
    /// The canonical form of `docs/savepoint-format.md`.
    #[default]
    Canonical,
    /// The state backend's own files.
    Native,
}

impl std::str::FromStr for SavepointFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "canonical" => Ok(SavepointFormat::Canonical),
            "native" => Ok(SavepointFormat::Native),
            _ => Err(format!("savepoint format \"{s}\" is not one of canonical, native")),
        }
    }
}

impl std::fmt::Display for SavepointFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SavepointFormat::Canonical => "canonical",
            SavepointFormat::Native => "native",
        })
    }
}

/// What a savepoint records of one operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SavepointOperator {
    /// The operator's uid.
    pub uid: String,
    /// Its parallelism when the savepoint was taken.
    pub parallelism: u32,
    /// The code it ran.
    pub module: OperatorCode,
    /// The states it declared, in the order its state files index them.
    pub states: Vec<StateDescriptor>,
    /// Its state files, one per subtask that held state (one per part of a subtask's key groups
    /// while a canary serves some of them).
    pub files: Vec<SavepointFile>,
    /// The canary that served some of its key groups when the savepoint was taken, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<SavedCanary>,
}

/// What a savepoint records of an operator's canary (`docs/upgrades.md`, *Canaries*): the key
/// groups from 0 up to `key_groups` are served by `module`, whose state files say `canary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SavedCanary {
    /// The code the canary ran.
    pub module: OperatorCode,
    /// The states it declared.
    pub states: Vec<StateDescriptor>,
    /// How many key groups it served (the first ones).
    pub key_groups: u32,
}

/// A savepoint's `_metadata`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SavepointMetadata {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written by this weir.
    pub format_version: u32,
    /// The job's name.
    pub job: String,
    /// The job's id (empty in savepoints of a weir that did not record it).
    #[serde(default)]
    pub job_id: String,
    /// The barrier it was taken at.
    pub savepoint_id: u64,
    /// Milliseconds since the Unix epoch.
    pub taken_at: u64,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// The form of its state: `canonical` (absent in savepoints of older weirs), or `native`
    /// when any operator's state is a backend's own files.
    #[serde(default)]
    pub state_format: SavepointFormat,
    /// Where each source subtask resumes.
    pub sources: Vec<SourcePosition>,
    /// Every operator, stateless ones included.
    pub operators: Vec<SavepointOperator>,
    /// What each sink had committed at the barrier.
    #[serde(default)]
    pub sinks: Vec<SinkCommitted>,
}

impl SavepointMetadata {
    /// Its state files as the runtime names them.
    pub fn state_files(&self) -> Vec<StateFile> {
        let files = self.operators.iter().flat_map(|op| op.files.iter().map(move |f| (op, f)));
        files
            .map(|(op, f)| StateFile {
                uid: op.uid.clone(),
                subtask: f.subtask,
                key_groups: f.key_groups.clone(),
                stored: f.stored.clone(),
                broadcast: f.broadcast.clone(),
                canary: f.canary.clone(),
            })
            .collect()
    }

    /// Bytes of state in it.
    pub fn size(&self) -> u64 {
        self.operators.iter().flat_map(|op| &op.files).map(|f| f.stored.size()).sum()
    }
}

/// Where a savepoint is: its storage (the directory holding it) and its directory's name there.
pub struct SavepointLocation {
    /// The storage holding the savepoint's directory.
    pub storage: Storage,
    /// The savepoint's directory in it.
    pub dir: String,
}

impl SavepointLocation {
    /// Parses a savepoint's path: a local directory (relative to `base`) or a URL such as
    /// `s3://bucket/savepoints/savepoint-<job>-<suffix>`. Any directory may hold a savepoint,
    /// whatever it is called (savepoints are relocatable, as Flink's): what makes it one is a
    /// valid `_metadata`, which [`SavepointLocation::metadata`] checks.
    pub fn parse(location: &str, base: &Path) -> Result<SavepointLocation, String> {
        let trimmed = location.trim_end_matches('/');
        let (parent, dir) = if trimmed.contains("://") && !trimmed.starts_with("file://") {
            let (parent, dir) = trimmed.rsplit_once('/').ok_or_else(|| format!("{location} is not a savepoint"))?;
            (parent.to_string(), dir.to_string())
        } else {
            let path = std::path::absolute(base.join(trimmed.trim_start_matches("file://")))
                .map_err(|e| format!("{location}: {e}"))?;
            let dir = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let parent = path.parent().ok_or_else(|| format!("{location} is not a savepoint"))?;
            (format!("file://{}", parent.display()), dir)
        };
        if dir.is_empty() || dir == ".." {
            return Err(format!("{location} is not a savepoint directory"));
        }
        let storage = Storage::open_existing(&parent, base).map_err(|e| match e.to_string() {
            cause if cause.ends_with("is not a directory") => format!("savepoint {location} does not exist"),
            cause => cause,
        })?;
        Ok(SavepointLocation { storage, dir })
    }

    /// The path of a file in the savepoint's directory.
    pub fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    /// Reads and checks `_metadata`.
    pub fn metadata(&self) -> Result<SavepointMetadata, String> {
        let path = self.file("_metadata");
        if let Err(e) = self.storage.get(&path)
            && e.is_not_found()
        {
            return Err(format!("{} is not a savepoint directory: it holds no _metadata", self.display()));
        }
        let json = checked::get(&self.storage, &path).map_err(|e| match e {
            checked::Unusable::Torn(cause) => format!("{}: {cause}", self.display()),
            checked::Unusable::Storage(e) => e.to_string(),
        })?;
        let metadata: SavepointMetadata = serde_json::from_str(&json).map_err(|e| {
            // A checkpoint's metadata says what it is.
            match serde_json::from_str::<serde_json::Value>(&json).ok().and_then(|v| v.get("checkpoint").cloned()) {
                Some(_) => format!(
                    "{} is a checkpoint, not a savepoint (checkpoints belong to their job): take a savepoint with \
                     `weir savepoint JOB` or `weir stop JOB`",
                    self.display()
                ),
                None => format!("{path}: {e}"),
            }
        })?;
        if metadata.format != FORMAT || !FORMAT_VERSIONS_READ.contains(&metadata.format_version) {
            return Err(format!(
                "{path} is {} version {}; this weir reads {FORMAT} versions 1 to {FORMAT_VERSION}",
                metadata.format, metadata.format_version
            ));
        }
        // The files it lists are in its own directory: a name that climbs out is not one weir wrote
        // (nor is a file shared with checkpoints: a savepoint is self-contained).
        for stored in metadata.operators.iter().flat_map(|op| &op.files).map(|f| &f.stored) {
            let outside = match stored {
                StoredState::Canonical { file, .. } => (!paths::is_plain_file_name(file)).then(|| file.clone()),
                StoredState::Native(native) => native
                    .files
                    .iter()
                    .find(|f| f.shared.is_some() || !paths::is_plain_file_name(&f.name))
                    .map(|f| format!("{}/{}", native.dir, f.shared.as_ref().unwrap_or(&f.name)))
                    .or_else(|| (!paths::is_plain_file_name(&native.dir)).then(|| native.dir.clone())),
            };
            if let Some(file) = outside {
                return Err(format!("{path} lists the file \"{file}\", which is not a file of its directory"));
            }
        }
        Ok(metadata)
    }

    /// Copies the files of one native snapshot of it into the local directory `into`.
    pub fn fetch_native(&self, native: &crate::runtime::NativeState, into: &Path) -> Result<(), String> {
        stored::fetch_native(&self.storage, &self.dir, None, native, into)
    }

    /// The paths of the files `stored` takes in it.
    pub fn stored_files(&self, stored: &StoredState) -> Vec<String> {
        match stored {
            StoredState::Canonical { file, .. } => vec![self.file(file)],
            StoredState::Native(native) => {
                native.files.iter().map(|f| self.file(&format!("{}/{}", native.dir, f.name))).collect()
            }
        }
    }

    /// Deletes the savepoint: the files its valid `_metadata` lists, then `_metadata`, then the
    /// directory if that leaves it empty. Nothing else: a savepoint may have been moved into a
    /// directory that holds other files. Returns whether the directory went too.
    pub fn dispose(&self) -> Result<bool, String> {
        let metadata = self.metadata().map_err(|e| format!("{e}; it was not disposed of"))?;
        let failed = |e: StorageError| format!("disposing of {}: {e}", self.display());
        for file in metadata.operators.iter().flat_map(|op| &op.files) {
            for path in self.stored_files(&file.stored) {
                self.storage.delete_file(&path).map_err(failed)?;
            }
            if let StoredState::Native(native) = &file.stored {
                self.storage.remove_dir_if_empty(&self.file(&native.dir)).map_err(failed)?;
            }
        }
        self.storage.delete_file(&self.file("_metadata")).map_err(failed)?;
        self.storage.remove_dir_if_empty(&self.dir).map_err(failed)
    }

    /// Where it is, for people: a local path, or the URL.
    pub fn display(&self) -> String {
        self.storage.display(&self.dir)
    }
}

/// Writes one savepoint of a running job into `<savepoint-dir>/savepoint-<job>-<suffix>/`.
pub struct SavepointSink {
    location: SavepointLocation,
    job: String,
    job_id: String,
    max_parallelism: u32,
    /// The form its state is stored in.
    format: SavepointFormat,
    /// Every operator, without files yet.
    operators: Vec<SavepointOperator>,
    /// Its `_metadata` once stored, or why it failed; with a condition to wait for either.
    outcome: std::sync::Mutex<Option<Result<SavepointMetadata, String>>>,
    settled: std::sync::Condvar,
    /// The job's checkpoint storage, when the job goes on from it (see [`SavepointSink::resumed_from`]).
    resume_point: Option<Storage>,
}

impl SavepointSink {
    /// A savepoint of job `job` (of id `job_id`) into the savepoint directory `storage`,
    /// recording `operators`, its state in form `format`.
    pub fn new(
        storage: Storage,
        (job, job_id): (&str, &str),
        max_parallelism: u32,
        operators: Vec<SavepointOperator>,
        format: SavepointFormat,
    ) -> Self {
        let digest = Sha256::digest(format!("{job}/{}/{:?}", std::process::id(), std::time::SystemTime::now()));
        let dir = paths::savepoint_dir(job, &hex::encode(&digest[..6]));
        let location = SavepointLocation { storage, dir };
        SavepointSink {
            location,
            job: job.to_string(),
            job_id: job_id.to_string(),
            max_parallelism,
            format,
            operators,
            outcome: Default::default(),
            settled: Default::default(),
            resume_point: None,
        }
    }

    /// Where it goes.
    pub fn location(&self) -> String {
        self.location.display()
    }

    /// Its `_metadata`, once complete.
    pub fn metadata(&self) -> Option<SavepointMetadata> {
        self.outcome.lock().ok()?.clone()?.ok()
    }

    /// Where the job goes on from at once after a stop at barrier `id` for an upgrade, the
    /// sources having stopped at `sources` and every operator's state handed over in place.
    pub fn in_place(self: &Arc<Self>, stopped: crate::runtime::Stopped) -> super::Restore {
        let (job, operators) = ((self.job.as_str(), self.job_id.as_str()), self.operators.clone());
        super::Restore::in_place(self.clone(), job, self.max_parallelism, stopped, operators)
    }

    /// Where it goes.
    pub(super) fn at(&self) -> SavepointLocation {
        SavepointLocation { storage: self.location.storage.clone(), dir: self.location.dir.clone() }
    }

    /// The job goes on from it (the stop of an upgrade or a rollback): once stored, it is
    /// recorded as a point to resume from in the job's checkpoint storage `checkpoints`.
    pub fn resumed_from(mut self, checkpoints: Option<&Storage>) -> Self {
        self.resume_point = checkpoints.cloned();
        self
    }

    /// Records that the savepoint will not be stored, and why.
    pub fn failed(&self, cause: String) {
        self.settle(Err(cause));
    }

    fn settle(&self, outcome: Result<SavepointMetadata, String>) {
        if let Ok(mut slot) = self.outcome.lock() {
            slot.get_or_insert(outcome);
        }
        self.settled.notify_all();
    }

    /// Waits until the savepoint is stored (or has failed) and returns it to restore from.
    pub fn stored(&self) -> Result<super::Restore, String> {
        let mut slot = self.outcome.lock().map_err(|_| "the savepoint's state is poisoned".to_string())?;
        while slot.is_none() {
            slot = self.settled.wait(slot).map_err(|_| "the savepoint's state is poisoned".to_string())?;
        }
        match slot.clone() {
            Some(Ok(metadata)) => {
                Ok(super::Restore::written(self.location.storage.clone(), self.location.dir.clone(), metadata))
            }
            Some(Err(cause)) => Err(cause),
            None => Err("the savepoint has no outcome (a weir bug)".to_string()),
        }
    }
}

impl CheckpointSink for SavepointSink {
    fn write_state(
        &self,
        _id: u64,
        uid: &str,
        subtask: u32,
        snapshot: StateSnapshot,
    ) -> Result<(StateFile, u64), String> {
        let form = match self.format {
            SavepointFormat::Canonical => Form::Canonical,
            SavepointFormat::Native => Form::Native { shared: None },
        };
        stored::put(&self.location.storage, &self.location.dir, (uid, subtask), snapshot, form)
    }

    fn complete(&self, id: u64, completed: Completed) -> Result<(), String> {
        let Completed { sources, states, sinks } = completed;
        let mut operators = self.operators.clone();
        for state in states {
            if let Some(op) = operators.iter_mut().find(|op| op.uid == state.uid) {
                let StateFile { subtask, key_groups, stored, broadcast, canary, .. } = state;
                op.files.push(SavepointFile { subtask, key_groups, stored, broadcast, canary });
            }
        }
        for op in &mut operators {
            op.files.sort_by_key(|f| (f.subtask, f.key_groups.start));
        }
        let native = operators.iter().flat_map(|op| &op.files).any(|f| matches!(f.stored, StoredState::Native(_)));
        let state_format = if native { SavepointFormat::Native } else { SavepointFormat::Canonical };
        let metadata = SavepointMetadata {
            format: FORMAT.to_string(),
            format_version: FORMAT_VERSION,
            job: self.job.clone(),
            job_id: self.job_id.clone(),
            savepoint_id: id,
            taken_at: crate::runtime::now_ms(),
            max_parallelism: self.max_parallelism,
            state_format,
            sources,
            operators,
            sinks,
        };
        checked::put(&self.location.storage, &self.location.file("_metadata"), &metadata)?;
        // Recorded before anyone waiting for it commits what its stop covers.
        if let Some(checkpoints) = &self.resume_point {
            super::resume_points::record(checkpoints, &self.job, &self.job_id, id, &self.location())?;
        }
        self.settle(Ok(metadata));
        Ok(())
    }
}

/// What a savepoint written from state at hand (not taken of a running job) is of.
pub struct WrittenSavepoint {
    /// The job's name.
    pub job: String,
    /// The id of the job the state comes from.
    pub job_id: String,
    /// The checkpoint or savepoint id it stands for.
    pub savepoint_id: u64,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// Where each source resumes.
    pub sources: Vec<SourcePosition>,
    /// Every operator, with its state.
    pub operators: Vec<WrittenOperator>,
}

/// One operator of a [`WrittenSavepoint`].
pub struct WrittenOperator {
    /// The operator, its `files` empty.
    pub operator: SavepointOperator,
    /// Its keyed state in all key groups, if it has any.
    pub keyed: Option<Box<dyn crate::state::StateBackend>>,
    /// Its broadcast state, if it has any.
    pub broadcast: Option<crate::state::broadcast::SavedBroadcast>,
}

/// Writes `savepoint` as a canonical savepoint at `location`: one state file per operator with
/// state, covering every key group (a restore at any parallelism takes the key groups it owns).
pub fn write(location: &SavepointLocation, savepoint: WrittenSavepoint) -> Result<SavepointMetadata, String> {
    let WrittenSavepoint { job, job_id, savepoint_id, max_parallelism, sources, operators } = savepoint;
    let key_groups = 0..max_parallelism;
    let mut written = Vec::new();
    for WrittenOperator { operator: mut op, keyed, broadcast } in operators {
        // Broadcast state is recorded beside a state file, as subtask 0 records it.
        let keyed = match (keyed, &broadcast) {
            (None, Some(_)) => {
                let kinds: Vec<_> = op.states.iter().map(|s| s.kind).collect();
                Some(Box::new(crate::state::MemoryBackend::new(key_groups.clone(), &kinds)) as Box<_>)
            }
            (keyed, _) => keyed,
        };
        if let Some(backend) = keyed {
            let body = backend.snapshot(key_groups.clone(), &op.states).map_err(|e| e.to_string())?;
            let snapshot = StateSnapshot { key_groups: key_groups.clone(), body, broadcast: None, part: None };
            let (file, _) = stored::put(&location.storage, &location.dir, (&op.uid, 0), snapshot, Form::Canonical)?;
            let (key_groups, stored) = (file.key_groups, file.stored);
            op.files.push(SavepointFile { subtask: 0, key_groups, stored, broadcast, canary: None });
        }
        written.push(op);
    }
    let metadata = SavepointMetadata {
        format: FORMAT.to_string(),
        format_version: FORMAT_VERSION,
        job,
        job_id,
        savepoint_id,
        taken_at: crate::runtime::now_ms(),
        max_parallelism,
        state_format: SavepointFormat::Canonical,
        sources,
        operators: written,
        sinks: Vec::new(),
    };
    checked::put(&location.storage, &location.file("_metadata"), &metadata)?;
    Ok(metadata)
}
