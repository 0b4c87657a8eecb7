//! [`SnapshotBody`]: a backend's keyed state as the synchronous part of a checkpoint leaves it,
//! for the uploader thread to store. Each backend makes its own ([`super::StateBackend::snapshot`]
//! and [`super::StateBackend::freeze`]), so the runtime and the checkpoint layer carry it without
//! knowing what it holds: a copy in the canonical form, a frozen backend, or, for a disk backend,
//! a checkpoint of its files.
use super::StateError;

/// A backend's snapshot at a barrier, on its way to storage.
pub trait SnapshotBody: Send {
    /// The snapshot file in the canonical form (see [`super::canonical`]) without its checksum
    /// trailer; called on the uploader thread, once. What the body holds (a frozen backend) is
    /// let go of when it returns.
    fn encode(self: Box<Self>) -> Result<Vec<u8>, StateError>;
}

/// A snapshot copied into the canonical form at the barrier.
pub(super) struct Copied(pub(super) Vec<u8>);

impl SnapshotBody for Copied {
    fn encode(self: Box<Self>) -> Result<Vec<u8>, StateError> {
        Ok(self.0)
    }
}
