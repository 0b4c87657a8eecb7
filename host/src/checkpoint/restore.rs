//! Restoring from a completed checkpoint or a savepoint: find it (for checkpoints, the newest
//! one that is intact), check every file against the checksum its `_metadata` records, then give
//! sources their positions and operators the key groups they own, state matched by name.
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::checked::{self, Unusable};
use super::savepoint::{SavepointLocation, SavepointMetadata, SavepointOperator, SavepointSink};
use super::storage::Storage;
use super::{paths, resume_points, stored};
use crate::runtime::checkpoint_stats::RestoredCheckpoint;
use crate::runtime::{NativeState, SinkCommitted, SourcePosition, StateFile, StoredState};
use crate::state::{Backends, NATIVE_NEEDS_ROCKSDB, NativePart, RestoredState, StateDescriptor, StateKind};
use serde::Deserialize;

/// A checkpoint's `_metadata`, as far as a restore reads it.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct CheckpointMetadata {
    format: u32,
    /// Empty in checkpoints of a weir that did not record it.
    #[serde(default)]
    job_id: String,
    checkpoint: u64,
    max_parallelism: u32,
    sources: Vec<SourcePosition>,
    states: Vec<StateFile>,
    #[serde(default)]
    sinks: Vec<SinkCommitted>,
}

/// Reads and checks checkpoint `id`'s `_metadata`.
fn read_metadata(storage: &Storage, job: &str, id: u64) -> Result<CheckpointMetadata, Unusable> {
    let path = paths::metadata(job, id);
    let json = checked::get(storage, &path)?;
    let m: CheckpointMetadata = serde_json::from_str(&json).map_err(|e| format!("{path}: {e}"))?;
    if !super::sink::METADATA_FORMATS_READ.contains(&m.format) {
        let supported = super::sink::METADATA_FORMATS_READ;
        let (oldest, newest) = (supported.start(), supported.end());
        return Err(format!("{path} has format {}, this weir reads formats {oldest} to {newest}", m.format).into());
    }
    Ok(m)
}

/// The stored snapshots checkpoint `id` of `job` lists, from its intact `_metadata`.
pub(super) fn stored_states(storage: &Storage, job: &str, id: u64) -> Result<Vec<StateFile>, Unusable> {
    Ok(read_metadata(storage, job, id)?.states)
}

/// The id of the job that wrote checkpoint `id` of `job` (empty when its `_metadata` names
/// none); `None` when it has no intact `_metadata`.
pub(super) fn checkpoint_owner(
    storage: &Storage,
    job: &str,
    id: u64,
) -> Result<Option<String>, super::storage::StorageError> {
    match read_metadata(storage, job, id) {
        Ok(m) => Ok(Some(m.job_id)),
        Err(Unusable::Torn(_)) => Ok(None),
        Err(Unusable::Storage(e)) => Err(e),
    }
}

/// A completed checkpoint or a savepoint to start from.
pub struct Restore {
    storage: Storage,
    /// The job it was taken of.
    job: String,
    /// That job's id (empty when not recorded).
    job_id: String,
    /// Its directory in `storage`.
    dir: String,
    /// The barrier id it was taken at.
    id: u64,
    max_parallelism: u32,
    sources: Vec<SourcePosition>,
    states: Vec<StateFile>,
    /// What each sink had committed at its barrier.
    sinks: Vec<SinkCommitted>,
    /// For a savepoint: what it records of every operator (code and declared states).
    operators: Option<Vec<SavepointOperator>>,
    /// Every operator's state is handed over in place: none is to be read.
    in_place: bool,
    /// Start even though some of its state has no operator to go to.
    allow_non_restored_state: bool,
    /// A fork starts from it: a new job beside the one it was taken of, which may still run.
    fork: bool,
    /// In place: the savepoint being stored behind the run that goes on from it.
    storing: Option<Arc<SavepointSink>>,
}

impl Restore {
    /// The newest intact checkpoint of `job` in `storage` with an id of at least `since`, or a
    /// newer savepoint the job went on from (see `resume_points.rs`), written by the job of id
    /// `owner` when given; older checkpoints are tried, with a warning, when a newer one is
    /// damaged or another job's. `None` when there is none; an error when there are some but
    /// none is intact (starting over would write their output again), or when the savepoint of
    /// a resume point cannot be read (going back behind it would write again what its stop
    /// committed).
    pub fn latest(storage: Storage, job: &str, since: u64, owner: Option<&str>) -> Result<Option<Restore>, String> {
        let checkpoints = storage.checkpoints(job).map_err(|e| e.to_string())?;
        let savepoints = resume_points::ids(&storage, job).map_err(|e| e.to_string())?;
        let mut candidates: Vec<(u64, bool)> =
            checkpoints.into_iter().map(|id| (id, false)).chain(savepoints.into_iter().map(|id| (id, true))).collect();
        candidates.sort_unstable();
        let foreign = |id: &str| owner.is_some_and(|o| !id.is_empty() && id != o);
        let mut damaged = Vec::new();
        for (id, savepoint) in candidates.into_iter().rev().take_while(|&(id, _)| id >= since) {
            if savepoint {
                let point = match resume_points::read(&storage, job, id) {
                    Ok(point) if foreign(&point.job_id) => continue,
                    Ok(point) => point,
                    Err(Unusable::Torn(cause)) => {
                        tracing::warn!("skipping resume point {id}: {cause}");
                        continue;
                    }
                    Err(Unusable::Storage(e)) => return Err(e.to_string()),
                };
                return match Restore::savepoint(&point.location, Path::new("/")) {
                    Ok(restore) => Ok(Some(restore)),
                    Err(cause) => Err(format!(
                        "job '{job}' went on from savepoint {} (barrier {id}: the stop of an upgrade), and it cannot be \
                         read: {cause}. Bring it back to resume from it; resuming from an older checkpoint instead \
                         (--from-checkpoint <storage>/<job>/chk-<n>) writes again what the job committed since",
                        point.location
                    )),
                };
            }
            match Self::checkpoint(storage.clone(), job, id) {
                Ok(restore) if restore.held_output().is_some() => {
                    tracing::info!(
                        "not resuming from checkpoint {id}: sink '{}' held its output back at it (an upgrade's \
                         rollback window)",
                        restore.held_output().unwrap_or_default()
                    );
                }
                Ok(restore) if foreign(&restore.job_id) => {
                    tracing::warn!(
                        "not resuming from checkpoint {id} of '{job}': it was written by job {}, not by this job ({})",
                        restore.job_id,
                        owner.unwrap_or_default()
                    );
                }
                Ok(restore) => return Ok(Some(restore)),
                // A directory without `_metadata` never completed: it is no checkpoint.
                Err(Unusable::Torn(_)) if storage.get(&paths::metadata(job, id)).is_err_and(|e| e.is_not_found()) => {}
                Err(Unusable::Torn(cause)) => {
                    tracing::warn!("skipping checkpoint {id}: it is damaged: {cause}");
                    damaged.push(format!("checkpoint {id}: {cause}"));
                }
                // Storage that cannot be reached says nothing about this checkpoint: falling back
                // to older ones (or to none, and a fresh start) would be wrong.
                Err(Unusable::Storage(e)) => return Err(e.to_string()),
            }
        }
        match damaged.is_empty() {
            true => Ok(None),
            false => Err(format!(
                "no intact checkpoint of job '{job}' to resume from ({}): starting over would write its output \
                 again. Restore a copy of the damaged file, keep more checkpoints (`retained`) so that an older one \
                 can be taken, start from a savepoint (--from-savepoint), or start the job anew on purpose (weir run \
                 without --from-checkpoint; on weir serve, submit it again)",
                damaged.join("; ")
            )),
        }
    }

    /// Checkpoint `id` of `job`, after checking that its `_metadata` and every state file it
    /// lists are intact: a torn or altered file is found here, before anything runs, and named.
    pub fn at(storage: Storage, job: &str, id: u64) -> Result<Restore, String> {
        let restore = Self::checkpoint(storage, job, id)?;
        if let Some(sink) = restore.held_output() {
            return Err(format!(
                "checkpoint {id} of job '{job}' was taken while sink '{sink}' held its output back (in the rollback \
                 window after an upgrade), so it cannot be resumed from: resume from the upgrade's savepoint \
                 (--from-checkpoint latest) or a later checkpoint"
            ));
        }
        Ok(restore)
    }

    /// The first sink that held output back at its barrier.
    fn held_output(&self) -> Option<&str> {
        self.sinks.iter().find(|s| s.held_output()).map(|s| s.uid.as_str())
    }

    fn checkpoint(storage: Storage, job: &str, id: u64) -> Result<Restore, Unusable> {
        let m = read_metadata(&storage, job, id)?;
        let dir = paths::checkpoint_dir(job, id);
        let restore = Restore {
            storage,
            job: job.to_string(),
            job_id: m.job_id,
            dir,
            id: m.checkpoint,
            max_parallelism: m.max_parallelism,
            sources: m.sources,
            states: m.states,
            sinks: m.sinks,
            operators: None,
            in_place: false,
            allow_non_restored_state: false,
            fork: false,
            storing: None,
        };
        restore.verify()?;
        Ok(restore)
    }

    /// The savepoint at `location` (a directory, relative to `base`, or a URL), checked.
    pub fn savepoint(location: &str, base: &Path) -> Result<Restore, String> {
        let at = SavepointLocation::parse(location, base)?;
        let metadata = at.metadata()?;
        let restore = Restore::written(at.storage, at.dir, metadata);
        restore.verify()?;
        Ok(restore)
    }

    /// A savepoint from its `_metadata`, as read from its directory or held by the process that
    /// has just written it (a rollback then reads only the state files it needs).
    pub fn written(storage: Storage, dir: String, m: SavepointMetadata) -> Restore {
        Restore {
            states: m.state_files(),
            job: m.job.clone(),
            job_id: m.job_id.clone(),
            storage,
            dir,
            id: m.savepoint_id,
            max_parallelism: m.max_parallelism,
            sources: m.sources,
            sinks: m.sinks,
            operators: Some(m.operators),
            in_place: false,
            allow_non_restored_state: false,
            fork: false,
            storing: None,
        }
    }

    /// Where a job that stopped for an upgrade at barrier `id` goes on from, before its savepoint
    /// is stored: the sources' positions, and the operators (with their declared states) whose
    /// state is handed over in place.
    pub fn in_place(
        storing: Arc<SavepointSink>,
        (job, job_id): (&str, &str),
        max_parallelism: u32,
        stopped: crate::runtime::Stopped,
        operators: Vec<SavepointOperator>,
    ) -> Restore {
        let at = storing.at();
        let crate::runtime::Stopped { id, positions: sources, sinks } = stopped;
        Restore {
            storage: at.storage,
            job: job.to_string(),
            job_id: job_id.to_string(),
            dir: at.dir,
            id,
            max_parallelism,
            sources,
            states: Vec::new(),
            sinks,
            operators: Some(operators),
            in_place: true,
            allow_non_restored_state: false,
            fork: false,
            storing: Some(storing),
        }
    }

    /// Lets a job start although some of this state has no operator (or declared state) to go to.
    pub fn allowing_non_restored_state(mut self, allow: bool) -> Self {
        self.allow_non_restored_state = allow;
        self
    }

    /// Marks it as what a fork starts from (a new job beside the one it was taken of).
    pub fn forked(mut self, fork: bool) -> Self {
        self.fork = fork;
        self
    }

    /// Whether a fork starts from it: the job it was taken of may still run, and its output is
    /// that job's to commit.
    pub fn is_fork(&self) -> bool {
        self.fork
    }

    /// For a job going on in place from a stop whose savepoint is still being stored: that
    /// savepoint, to wait for before committing output its stop covers.
    pub fn storing(&self) -> Option<Arc<SavepointSink>> {
        self.storing.clone()
    }

    /// Checks every stored snapshot against the checksums `_metadata` records.
    fn verify(&self) -> Result<(), Unusable> {
        self.states.iter().try_for_each(|state| stored::verify(&self.storage, &self.dir, self.shared_job(), state))
    }

    /// The job whose `shared/` directory its files may be in: a checkpoint's (savepoints are
    /// self-contained).
    fn shared_job(&self) -> Option<&str> {
        (!self.is_savepoint()).then_some(self.job.as_str())
    }

    /// The barrier id it was taken at.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The name of the job it was taken of.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// What sink `uid` had committed at its barrier, when recorded.
    pub fn sink_committed(&self, uid: &str) -> Option<&serde_json::Value> {
        self.sinks.iter().find(|s| s.uid == uid).map(|s| &s.committed)
    }

    /// The id of the job it was taken of (empty when it does not record one).
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// Refuses to start a fork of it that has the name of the job it was taken of: a fork is a
    /// new job, and two jobs of one name would mix their checkpoints.
    pub fn check_fork(&self, name: &str) -> Result<(), String> {
        if name == self.job {
            return Err(format!(
                "a fork is a new job: give it a name of its own (the savepoint is of job '{name}', and so is the \
                 forked job), so that the two jobs' checkpoints do not mix"
            ));
        }
        Ok(())
    }

    /// True for a savepoint, false for a checkpoint.
    pub fn is_savepoint(&self) -> bool {
        self.operators.is_some()
    }

    /// Where it is: a local path, or the storage URL and its directory.
    pub fn location(&self) -> String {
        self.storage.display(&self.dir)
    }

    /// What the checkpoint statistics record of a restore from it, starting now.
    pub fn stats(&self) -> RestoredCheckpoint {
        RestoredCheckpoint {
            id: self.id(),
            restore_timestamp: crate::runtime::now_ms(),
            external_path: self.location(),
            is_savepoint: self.is_savepoint(),
        }
    }

    /// The max parallelism it was taken with (key groups cannot change).
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The sources it has positions for.
    pub fn source_uids(&self) -> Vec<&str> {
        let mut uids: Vec<&str> = self.sources.iter().map(|s| s.uid.as_str()).collect();
        uids.dedup();
        uids
    }

    /// The operators it has state for.
    pub fn operator_uids(&self) -> Vec<&str> {
        let mut uids: Vec<&str> = self.states.iter().map(|s| s.uid.as_str()).collect();
        uids.dedup();
        uids
    }

    /// The canary operator `uid` ran when this was taken, if any: the SHA-256 of its module and
    /// how many key groups it served (the first ones), from the state files it wrote.
    pub fn canary(&self, uid: &str) -> Option<(&str, u32)> {
        let files = self.states.iter().filter(|s| s.uid == uid);
        let canary = files.filter_map(|s| Some((s.canary.as_deref()?, s.key_groups.end)));
        // In place, before the savepoint's files are known: what it records of the canary.
        let recorded = || {
            let canary = self.saved_operator(uid)?.canary.as_ref()?;
            match &canary.module {
                super::savepoint::OperatorCode::Module { sha256, .. } => Some((sha256.as_str(), canary.key_groups)),
                super::savepoint::OperatorCode::Builtin { .. } => None,
            }
        };
        canary.max_by_key(|(_, end)| *end).or_else(|| recorded().filter(|_| self.in_place))
    }

    /// Whether state without an operator to go to may be left behind.
    pub fn allows_non_restored_state(&self) -> bool {
        self.allow_non_restored_state
    }

    /// For a savepoint: what it records of operator `uid`.
    pub fn saved_operator(&self, uid: &str) -> Option<&SavepointOperator> {
        self.operators.as_ref()?.iter().find(|op| op.uid == uid)
    }

    /// Where each source subtask it has a position for resumes.
    pub fn positions(&self) -> &[SourcePosition] {
        &self.sources
    }

    /// Operator `uid`'s state in `key_groups`, in a backend of `backends` for states of `kinds`,
    /// from the snapshots of that operator that cover any of those key groups (at any
    /// parallelism), each saved state going to the declared state of the same name (a saved
    /// state the operator no longer declares is left behind: the job was built knowing that).
    /// Native snapshots are fetched and opened, the one covering most of `key_groups` in place;
    /// canonical ones are inserted. The schema version each declared state was saved under comes
    /// with it.
    pub fn restore_state(
        &self,
        uid: &str,
        declared: &[StateDescriptor],
        backends: &Backends,
        kinds: &[StateKind],
        key_groups: Range<u32>,
    ) -> Result<RestoredState, String> {
        if self.in_place && !declared.is_empty() {
            // Not handed over (a subtask whose state could not be split as the next run's parts
            // needed): read from the savepoint once it is stored.
            let storing = self.storing.as_ref().ok_or(format!("the state of operator '{uid}' was not handed over"))?;
            let stored =
                storing.stored().map_err(|e| format!("the state of operator '{uid}' was not handed over: {e}"))?;
            return stored.restore_state(uid, declared, backends, kinds, key_groups);
        }
        let mut saved_versions = vec![None; declared.len()];
        // Where each saved state goes, noting the version it was saved with.
        let mut map_states = |saved: &[StateDescriptor]| -> Result<Vec<Option<u32>>, String> {
            let to: Vec<Option<u32>> =
                saved.iter().map(|s| declared.iter().position(|d| d.name == s.name).map(|i| i as u32)).collect();
            for (saved, to) in saved.iter().zip(&to) {
                let Some(i) = to.map(|i| i as usize) else { continue };
                match saved_versions[i] {
                    Some(v) if v != saved.schema_version => {
                        return Err(format!(
                            "state '{}' of operator '{uid}' was saved with schema versions {v} and {} in {}",
                            saved.name,
                            saved.schema_version,
                            self.location()
                        ));
                    }
                    _ => saved_versions[i] = Some(saved.schema_version),
                }
            }
            Ok(to)
        };
        let overlap = |s: &StateFile| {
            s.key_groups.end.min(key_groups.end).saturating_sub(s.key_groups.start.max(key_groups.start))
        };
        let mut files: Vec<&StateFile> = self.states.iter().filter(|s| s.uid == uid && overlap(s) > 0).collect();
        files.sort_by_key(|s| std::cmp::Reverse(overlap(s)));
        let mut parts = Vec::new();
        let mut canonical = Vec::new();
        for state in files {
            let stored = match &state.stored {
                StoredState::Native(stored) => stored,
                StoredState::Canonical { file, .. } => {
                    canonical.push(file);
                    continue;
                }
            };
            let part = map_states(&stored.states).and_then(|to| self.fetch_native(uid, state, stored, backends, to));
            match part {
                Ok(part) => parts.push(part),
                Err(e) => {
                    for part in parts {
                        let _ = std::fs::remove_dir_all(part.dir);
                    }
                    return Err(e);
                }
            }
        }
        let mut backend = match parts.is_empty() {
            true => backends.open(key_groups.clone(), kinds)?,
            false => backends.restore(parts, key_groups.clone(), kinds)?,
        };
        for file in canonical {
            // Checked against _metadata when the checkpoint was chosen; the snapshot's own
            // trailer is checked as it is read.
            let path = format!("{}/{file}", self.dir);
            let bytes = self.storage.get(&path).map_err(|e| e.to_string())?;
            let snapshot = crate::state::canonical::read(&bytes, &path).map_err(|e| e.to_string())?;
            let to = map_states(&snapshot.states)?;
            snapshot.restore_into(&mut *backend, key_groups.clone(), &to).map_err(|e| e.to_string())?;
        }
        // Broadcast state is recorded once per operator, whatever key groups a subtask owns.
        let broadcast =
            self.states.iter().find(|s| s.uid == uid && s.broadcast.is_some()).and_then(|s| s.broadcast.clone());
        Ok(RestoredState { backend, saved_versions, timers: None, broadcast })
    }

    /// Fetches the files of operator `uid`'s native snapshot `state` into a new directory of
    /// `backends`, its saved states going to the declared states `to`.
    fn fetch_native(
        &self,
        uid: &str,
        state: &StateFile,
        stored: &NativeState,
        backends: &Backends,
        to: Vec<Option<u32>>,
    ) -> Result<NativePart, String> {
        if !backends.reads_native(&stored.native) {
            return Err(format!("{} of operator '{uid}': {NATIVE_NEEDS_ROCKSDB}", self.describe()));
        }
        let dir = backends.new_database_dir()?;
        if let Err(e) = stored::fetch_native(&self.storage, &self.dir, self.shared_job(), stored, &dir) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let shared_names = stored.files.iter().filter_map(|f| Some((f.name.clone(), f.shared.clone()?))).collect();
        let kinds = stored.states.iter().map(|s| s.kind).collect();
        Ok(NativePart { dir, key_groups: state.key_groups.clone(), kinds, to, shared_names })
    }

    /// What it is, for messages: "checkpoint 7" or "savepoint <location>".
    pub fn describe(&self) -> String {
        if self.is_savepoint() { format!("savepoint {}", self.location()) } else { format!("checkpoint {}", self.id) }
    }

    /// Whether it holds state of operator `uid` in a native format.
    pub fn has_native_state(&self, uid: &str) -> bool {
        self.states.iter().any(|s| s.uid == uid && matches!(s.stored, StoredState::Native(_)))
    }
}
