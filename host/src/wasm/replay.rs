//! Replay of one key (`weir replay`): an operator's module, opened in a scratch sandbox over the
//! key group of one key with that key group's state from a savepoint, takes events of that key
//! one at a time; the caller reads the key's state and timers between them. Nothing it does
//! reaches the savepoint or any sink.
use std::sync::Arc;

use super::operator::WasmOperator;
use super::trial::TrialTarget;
use crate::checkpoint::Restore;
use crate::key_group::key_group;
use crate::runtime::{Emitted, Event, EventBatch, Interrupt, Operator, SubtaskInfo};
use crate::state::{StateDescriptor, StateKind, TIMERS_STATE, timer_of, ttl};

/// One entry of the key's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The state's name.
    pub state: String,
    /// Its kind.
    pub kind: StateKind,
    /// A map state's map key.
    pub map_key: Option<Vec<u8>>,
    /// The operator's bytes (without the expiry of a state with a time-to-live).
    pub value: Vec<u8>,
}

/// A pending timer of the key: its domain (`event-time` or `processing-time`) and time.
pub type KeyTimer = (&'static str, i64);

/// An operator over one key's key group, taking that key's events.
pub struct KeyReplay {
    operator: WasmOperator,
    key: Vec<u8>,
    /// The names of its module's side outputs, in order.
    side_outputs: Vec<String>,
}

impl KeyReplay {
    /// Opens `target`'s module over the key group of `key`, its state restored from `restore`
    /// (migrated as a restore would).
    pub fn open(target: &TrialTarget, restore: Arc<Restore>, key: &[u8]) -> Result<Self, String> {
        let max = target.max_parallelism;
        let kg = u32::from(key_group(key, max));
        let info = SubtaskInfo {
            uid: Arc::from(format!("{} (replay)", target.uid).as_str()),
            index: kg,
            parallelism: max,
            max_parallelism: max,
            attempt: 0,
            interrupt: Interrupt::default(),
        };
        let (uid, states) = (target.uid.clone(), target.module.states(target.keyed));
        let restoring: crate::state::StateRestore = Arc::new(move |backends, kinds, key_groups, _| {
            restore.restore_state(&uid, &states, backends, kinds, key_groups)
        });
        let operator = target.factory(restoring).open(&info, kg..kg + 1, None)?;
        let side_outputs = target.module.description.side_outputs.clone();
        Ok(KeyReplay { operator, key: key.to_vec(), side_outputs })
    }

    /// The key's state and its pending timers, in the order of the module's states.
    pub fn state(&self) -> Result<(Vec<KeyEntry>, Vec<KeyTimer>), String> {
        let states: &[StateDescriptor] = self.operator.states();
        let (mut entries, mut timers) = (Vec::new(), Vec::new());
        let now = ttl::now_ms();
        for (state, map_key, stored) in self.operator.entries_of(&self.key)? {
            let Some(descriptor) = states.get(state as usize) else { continue };
            if descriptor.name == TIMERS_STATE {
                timers.extend(map_key.as_deref().and_then(timer_of));
                continue;
            }
            let value = match descriptor.time_to_live {
                // An expired entry is as good as gone: the operator no longer sees it.
                Some(_) => match ttl::unwrap(&stored, now) {
                    Some(value) => value.to_vec(),
                    None => continue,
                },
                None => stored,
            };
            entries.push(KeyEntry { state: descriptor.name.clone(), kind: descriptor.kind, map_key, value });
        }
        Ok((entries, timers))
    }

    /// Processes the key's event `value` (event time `timestamp`); what it emitted.
    pub fn process(&mut self, value: &[u8], timestamp: Option<i64>) -> Result<Vec<String>, String> {
        let mut batch = EventBatch::default();
        batch.push(Event { key: Some(&self.key), value, timestamp });
        let mut out = Emitted::default();
        self.operator.process(0, &batch, &mut out)?;
        Ok(self.lines(out))
    }

    /// Fires the timers due at `watermark` (event time) and at the processing time now; what
    /// they emitted.
    pub fn advance(&mut self, watermark: i64) -> Result<Vec<String>, String> {
        let mut out = Emitted::default();
        while self.operator.advance_time(watermark, &mut out)? {}
        Ok(self.lines(out))
    }

    /// What `out` holds as lines: the main output's values, then each side output's after its
    /// name in brackets.
    fn lines(&self, out: Emitted) -> Vec<String> {
        let text = |e: Event<'_>| String::from_utf8_lossy(e.value).into_owned();
        let mut lines: Vec<String> = out.main.iter().map(text).collect();
        for (k, side) in out.side.iter().enumerate() {
            let name = self.side_outputs.get(k).map_or("side output", String::as_str);
            lines.extend(side.iter().map(|e| format!("[{name}] {}", text(e))));
        }
        lines
    }
}
