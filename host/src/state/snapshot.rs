//! [`SnapshotBody`]: a backend's keyed state as the synchronous part of a checkpoint leaves it,
//! for the uploader thread to store. Each backend makes its own ([`super::StateBackend::snapshot`]
//! and [`super::StateBackend::freeze`]), so the runtime and the checkpoint layer carry it without
//! knowing what it holds: a copy in the canonical form, a frozen backend, or, for a disk backend,
//! a checkpoint of its files ([`NativeFiles`]), which native checkpoints and savepoints store as
//! they are and a restore opens again ([`NativePart`]).
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{StateDescriptor, StateError, StateKind};

/// A backend's snapshot at a barrier, on its way to storage.
pub trait SnapshotBody: Send {
    /// The snapshot file in the canonical form (see [`super::canonical`]) without its checksum
    /// trailer; called on the uploader thread, once. What the body holds (a frozen backend) is
    /// let go of when it returns.
    fn encode(self: Box<Self>) -> Result<Vec<u8>, StateError>;

    /// The files of a disk backend's own format, for a native checkpoint or savepoint to store
    /// instead of the canonical form (taking them may be the part of the snapshot left for the
    /// uploader thread); `None` for a backend that has none (memory).
    fn native(&mut self) -> Result<Option<NativeFiles<'_>>, StateError> {
        Ok(None)
    }
}

/// A snapshot in a disk backend's own format: the files of a database, in one directory.
pub struct NativeFiles<'a> {
    /// The format they are in ("rocksdb"): only a backend of that kind restores them.
    pub format: &'static str,
    /// The directory holding them.
    pub dir: &'a Path,
    /// The states the database holds, in the order its records index them.
    pub states: &'a [StateDescriptor],
    /// Every file of the database.
    pub files: Vec<NativeFile>,
}

/// One file of a [`NativeFiles`].
#[derive(Debug, Clone)]
pub struct NativeFile {
    /// Its name in the directory.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// For a file that never changes once written (an SST file), a name no other file of any
    /// database has: incremental checkpoints store it once under that name and share it.
    pub shared_name: Option<String>,
}

/// A native snapshot a restore reads, its files fetched into a directory of the backend's
/// (see [`super::Backends::new_database_dir`]).
pub struct NativePart {
    /// The directory holding its files; the restore takes it over (or deletes it).
    pub dir: PathBuf,
    /// The key groups it covers.
    pub key_groups: Range<u32>,
    /// The kinds of the states it holds, in the order its records index them.
    pub kinds: Vec<StateKind>,
    /// Per saved state, the index of the declared state it goes to (`None`: left behind).
    pub to: Vec<Option<u32>>,
    /// The shared name of each of its files that has one (file name to shared name), so that
    /// the restored database's next incremental checkpoint shares them again.
    pub shared_names: HashMap<String, String>,
}

/// A snapshot copied into the canonical form at the barrier.
pub(super) struct Copied(pub(super) Vec<u8>);

impl SnapshotBody for Copied {
    fn encode(self: Box<Self>) -> Result<Vec<u8>, StateError> {
        Ok(self.0)
    }
}
