//! [`Handover`]: what one run of a job leaves in place for the next when it stops for an upgrade
//! (operators' state, sources' positions, sinks' committed output), so the next reads nothing back.
use super::snapshot::{SinkCommitted, SourcePosition};
use super::task::HandedOverState;

/// Operator state handed over in place from one run of a job to the next (an upgrade): by uid,
/// subtask and first key group (a subtask hands over one state per part of its key groups when
/// a canary's step splits them), with the key groups it covers.
#[derive(Default)]
pub struct Handover {
    states: std::sync::Mutex<std::collections::HashMap<(String, u32, u32), HandedOverState>>,
    /// Per operator uid: the key groups where the next run's parts begin (a canary's step).
    cuts: std::sync::Mutex<std::collections::HashMap<String, Vec<u32>>>,
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
    /// Leaves subtask `subtask` of operator `uid`'s state (of one part of its key groups).
    pub fn put(&self, uid: &str, subtask: u32, state: HandedOverState) {
        if let Ok(mut states) = self.states.lock() {
            states.insert((uid.to_string(), subtask, state.key_groups.start), state);
        }
    }

    /// A stop for an upgrade is about to be asked for: what an earlier one left and no run took
    /// goes, and the next run's operators `cuts` (per uid, the key groups where its parts begin)
    /// are where the operators split their state as they hand it over.
    pub fn prepare(&self, cuts: std::collections::HashMap<String, Vec<u32>>) {
        if let Ok(mut states) = self.states.lock() {
            states.clear();
        }
        if let Ok(mut slot) = self.cuts.lock() {
            *slot = cuts;
        }
    }

    /// Where operator `uid`'s next run's parts begin.
    pub fn cuts(&self, uid: &str) -> Vec<u32> {
        self.cuts.lock().ok().and_then(|cuts| cuts.get(uid).cloned()).unwrap_or_default()
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
        let key = (uid.to_string(), subtask, key_groups.start);
        if states.get(&key).is_some_and(|state| state.key_groups == *key_groups) {
            return states.remove(&key);
        }
        None
    }
}
