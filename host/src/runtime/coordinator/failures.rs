//! Counting failed checkpoints: the job survives `tolerable-failures` in a row and fails at one
//! more (Flink's `CheckpointFailureManager`). A completed checkpoint starts the count again.
use crate::runtime::JobFailure;

/// Consecutive checkpoint failures.
pub(super) struct FailureCounter {
    tolerable: u32,
    consecutive: u32,
}

impl FailureCounter {
    pub(super) fn new(tolerable: u32) -> Self {
        FailureCounter { tolerable, consecutive: 0 }
    }

    /// A checkpoint completed.
    pub(super) fn succeeded(&mut self) {
        self.consecutive = 0;
    }

    /// Checkpoint `id` failed for `cause`: the job's failure once more than `tolerable` failed in
    /// a row, else a warning.
    pub(super) fn failed(&mut self, id: u64, cause: String) -> Result<(), JobFailure> {
        self.consecutive += 1;
        let tolerable = self.tolerable;
        if self.consecutive > tolerable {
            let cause = match tolerable {
                0 => cause,
                _ => format!(
                    "{cause} ({} checkpoints in a row failed; tolerable-failures is {tolerable})",
                    self.consecutive
                ),
            };
            return Err(JobFailure::Checkpoint { id, cause });
        }
        tracing::warn!(
            "checkpoint {id} failed: {cause} ({} of {tolerable} tolerable failures in a row)",
            self.consecutive
        );
        Ok(())
    }
}
