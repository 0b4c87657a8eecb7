//! [`Handover`]: what one run of a job leaves in place for the next when it stops for an upgrade
//! (operators' state, sources' positions, sinks' committed output), so the next reads nothing back.
use super::snapshot::{SinkCommitted, SourcePosition};
use super::task::HandedOverState;

/// Operator state handed over in place from one run of a job to the next (an upgrade): by uid
/// and subtask, with the key groups it covers.
#[derive(Default)]
pub struct Handover {
    states: std::sync::Mutex<std::collections::HashMap<(String, u32), HandedOverState>>,
    /// The barrier of the stop, where each source stopped at it and what each sink had
    /// committed by it.
    stopped: std::sync::Mutex<Stopped>,
}

/// Where a job stopped for a handover.
#[derive(Default)]
pub struct Stopped {
    /// The stop's barrier id.
    pub id: u64,
    /// Each source subtask's position at it.
    pub positions: Vec<SourcePosition>,
    /// Each sink's committed output at it.
    pub sinks: Vec<SinkCommitted>,
}

impl Handover {
    /// Leaves subtask `subtask` of operator `uid`'s state.
    pub fn put(&self, uid: &str, subtask: u32, state: HandedOverState) {
        if let Ok(mut states) = self.states.lock() {
            states.insert((uid.to_string(), subtask), state);
        }
    }

    /// Records where a source subtask stopped, at barrier `id`.
    pub fn put_position(&self, id: u64, position: SourcePosition) {
        if let Ok(mut stopped) = self.stopped.lock() {
            stopped.id = id;
            stopped.positions.push(position);
        }
    }

    /// Records what the sinks have committed by the stop's barrier.
    pub fn put_sinks(&self, sinks: Vec<SinkCommitted>) {
        if let Ok(mut stopped) = self.stopped.lock() {
            stopped.sinks = sinks;
        }
    }

    /// Takes where the job stopped.
    pub fn take_stopped(&self) -> Stopped {
        self.stopped.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
    }

    /// Takes what subtask `subtask` of operator `uid` left, if it covers exactly `key_groups`.
    pub fn take(&self, uid: &str, subtask: u32, key_groups: &std::ops::Range<u32>) -> Option<HandedOverState> {
        let mut states = self.states.lock().ok()?;
        let key = (uid.to_string(), subtask);
        if states.get(&key).is_some_and(|state| state.key_groups == *key_groups) {
            return states.remove(&key);
        }
        None
    }
}
