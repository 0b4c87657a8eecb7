//! [`Handover`]: what one run of a job leaves in place for the next when it stops for an upgrade
//! (operators' state, sources' positions, sinks' committed output), so the next reads nothing back.
use super::snapshot::{SinkCommitted, SourcePosition};

/// Operator state handed over in place from one run of a job to the next (an upgrade): by uid
/// and subtask, with the key groups it covers.
#[derive(Default)]
pub struct Handover {
    states: std::sync::Mutex<std::collections::HashMap<(String, u32), HandedOver>>,
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

type HandedOver = (std::ops::Range<u32>, Box<dyn crate::state::StateBackend>);

impl Handover {
    /// Leaves subtask `subtask` of operator `uid`'s state, covering `key_groups`.
    pub fn put(
        &self,
        uid: &str,
        subtask: u32,
        key_groups: std::ops::Range<u32>,
        state: Box<dyn crate::state::StateBackend>,
    ) {
        if let Ok(mut states) = self.states.lock() {
            states.insert((uid.to_string(), subtask), (key_groups, state));
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
    pub fn take(
        &self,
        uid: &str,
        subtask: u32,
        key_groups: &std::ops::Range<u32>,
    ) -> Option<Box<dyn crate::state::StateBackend>> {
        let mut states = self.states.lock().ok()?;
        let key = (uid.to_string(), subtask);
        if states.get(&key).is_some_and(|(range, _)| range == key_groups) {
            return states.remove(&key).map(|(_, state)| state);
        }
        None
    }
}
