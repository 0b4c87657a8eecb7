//! Input batches an operator processed, recorded on request: a trial of a new module
//! (`crate::wasm::trial`) replays some of them through the old module and the new one. Nothing is
//! recorded, and nothing copied, unless a trial has asked; then each subtask of the operator
//! copies the batches it processes until the recording holds its bound in bytes.
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::EventBatch;

/// A job's recordings of its operators' input, the same across its runs.
#[derive(Default)]
pub struct RecentInput {
    /// Whether any operator's input is being recorded: the one check a batch costs otherwise.
    armed: AtomicBool,
    recordings: Mutex<HashMap<String, Recording>>,
}

/// One operator's recording.
struct Recording {
    /// The batches recorded, each with the index of the input it came from.
    batches: Vec<(usize, EventBatch)>,
    bytes: usize,
    limit: usize,
}

impl RecentInput {
    /// Starts recording operator `uid`'s input, up to `limit` bytes of keys and values.
    pub fn arm(&self, uid: &str, limit: usize) {
        if let Ok(mut recordings) = self.recordings.lock() {
            recordings.insert(uid.to_string(), Recording { batches: Vec::new(), bytes: 0, limit });
            self.armed.store(true, Ordering::SeqCst);
        }
    }

    /// Records `batch`, from input `input`, if operator `uid`'s input is being recorded.
    pub(crate) fn record(&self, uid: &str, input: usize, batch: &EventBatch) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut recordings) = self.recordings.lock() else { return };
        let Some(recording) = recordings.get_mut(uid) else { return };
        if recording.bytes < recording.limit {
            recording.bytes += batch.iter().map(|e| e.key.map_or(0, <[u8]>::len) + e.value.len()).sum::<usize>();
            recording.batches.push((input, batch.clone()));
        }
    }

    /// Bytes recorded of operator `uid`'s input so far.
    pub fn recorded(&self, uid: &str) -> usize {
        self.recordings.lock().ok().and_then(|r| r.get(uid).map(|r| r.bytes)).unwrap_or(0)
    }

    /// Stops recording operator `uid`'s input; what was recorded.
    pub fn take(&self, uid: &str) -> Vec<(usize, EventBatch)> {
        let Ok(mut recordings) = self.recordings.lock() else { return Vec::new() };
        let taken = recordings.remove(uid).map(|r| r.batches).unwrap_or_default();
        self.armed.store(!recordings.is_empty(), Ordering::SeqCst);
        taken
    }
}
