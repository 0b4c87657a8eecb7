//! A shadow's operator subtasks (see [`crate::runtime::shadow`]): the new module, opened as any
//! subtask of the operator is, on the state forked from the live subtask, migrating in the fork
//! the states whose schema it changed.
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::trial::TrialTarget;
use crate::runtime::shadow::ShadowFactory;
use crate::runtime::{ForkedState, Operator, OperatorFactory, SubtaskInfo};
use crate::state::{Backends, RestoredState, StateKind, StateRestore};

impl ShadowFactory for TrialTarget {
    fn create(&self, info: &SubtaskInfo, forked: ForkedState) -> Result<Box<dyn Operator>, String> {
        let ForkedState { state, states, .. } = forked;
        let restored = Mutex::new(Some(RestoredState {
            backend: state.backend,
            saved_versions: states.iter().map(|s| Some(s.schema_version)).collect(),
            timers: state.timers,
            broadcast: state.broadcast,
        }));
        let restore: StateRestore = Arc::new(move |_: &Backends, _: &[StateKind], _: Range<u32>, _: u32| {
            restored.lock().ok().and_then(|mut r| r.take()).ok_or_else(|| "the forked state was taken".to_string())
        });
        self.factory(restore).create(info)
    }
}
