//! An operator subtask that runs more than one module, each over a part of its key groups: a
//! canary (`docs/upgrades.md`, *Canaries*). Each event goes to the part that owns its key's key
//! group, each part keeps its own state and timers and snapshots them into a file of its own, and
//! what each module version served is counted apart ([`ModuleVersions`]).
use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::abort_if::AbortIf;
use super::metrics::clock_ns;
use super::{Emitted, EventBatch, Operator, StateSnapshot};
use crate::key_group::key_group;

/// Which module of an operator a version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionRole {
    /// The operator's own module.
    Stable,
    /// Its canary's.
    Canary,
}

/// What one module version of an operator served, over all its subtasks, while the canary runs.
pub struct ModuleVersion {
    role: VersionRole,
    /// The code, for people: `count_v2 1.0.0 (sha256:…)`.
    module: String,
    /// The key groups it serves.
    key_groups: Range<u32>,
    events_in: AtomicU64,
    events_out: AtomicU64,
    busy_ns: AtomicU64,
    errors: AtomicU64,
    /// The last reading of its output, for a rate over the time between two readings.
    rate: Mutex<RateSample>,
}

#[derive(Default)]
struct RateSample {
    at_ns: u64,
    events_out: u64,
    per_second: f64,
}

/// What one module version served, as the job's status shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VersionSummary {
    /// `stable` (the operator's module) or `canary`.
    pub role: VersionRole,
    /// Its code.
    pub module: String,
    /// The key groups it serves.
    pub key_groups: Range<u32>,
    /// Events it processed.
    pub events_in: u64,
    /// Events it emitted.
    pub events_out: u64,
    /// Events it emitted per second, over the time since the status was last read (at least a
    /// second).
    pub events_out_per_second: f64,
    /// Milliseconds spent in its calls.
    pub busy_ms: u64,
    /// Calls of it that failed (each failed the job's run).
    pub errors: u64,
}

impl ModuleVersion {
    /// A version serving `key_groups` with `module`.
    pub fn new(role: VersionRole, module: String, key_groups: Range<u32>) -> Self {
        ModuleVersion {
            role,
            module,
            key_groups,
            events_in: AtomicU64::new(0),
            events_out: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rate: Mutex::default(),
        }
    }

    /// What it served so far.
    pub fn summary(&self) -> VersionSummary {
        let events_out = self.events_out.load(Ordering::Relaxed);
        let now = clock_ns();
        let per_second = match self.rate.lock() {
            Ok(mut sample) => {
                let elapsed = now.saturating_sub(sample.at_ns);
                if sample.at_ns == 0 {
                    (sample.at_ns, sample.events_out) = (now, events_out);
                } else if elapsed >= 1_000_000_000 {
                    sample.per_second = events_out.saturating_sub(sample.events_out) as f64 * 1e9 / elapsed as f64;
                    (sample.at_ns, sample.events_out) = (now, events_out);
                }
                sample.per_second
            }
            Err(_) => 0.0,
        };
        VersionSummary {
            role: self.role,
            module: self.module.clone(),
            key_groups: self.key_groups.clone(),
            events_in: self.events_in.load(Ordering::Relaxed),
            events_out,
            events_out_per_second: per_second,
            busy_ms: self.busy_ns.load(Ordering::Relaxed) / 1_000_000,
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// The module versions of one operator: its own, then its canary's.
pub type ModuleVersions = Vec<ModuleVersion>;

/// What a canary's `abort-if` condition measures.
#[derive(Debug, Clone, Copy)]
pub enum CanaryMeasure {
    /// Failed calls of the canary's module.
    Errors,
    /// The events the canary emits per event it processes, over those of the operator's own
    /// module (1: alike).
    OutRatio,
}

/// A condition that aborts a canary by itself (`abort-if`).
pub type CanaryAbortIf = AbortIf<CanaryMeasure>;

impl std::str::FromStr for CanaryAbortIf {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let measures = [
            ("errors", CanaryMeasure::Errors, "failed calls of the canary's module, and the events it set aside"),
            ("out-ratio", CanaryMeasure::OutRatio, "its events out per event in, over the old module's"),
        ];
        AbortIf::parse(text, &measures)
    }
}

/// Events each version processes before the ratio of their outputs is judged.
pub const RATIO_AFTER_EVENTS: u64 = 1000;

/// The first of `conditions` that holds of what an operator's `versions` (its own module's, then
/// its canary's) counted, said for people.
pub fn judge(conditions: &[CanaryAbortIf], versions: &ModuleVersions) -> Option<String> {
    let [stable, canary] = versions.as_slice() else { return None };
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (stable_in, stable_out) = (load(&stable.events_in), load(&stable.events_out));
    let (canary_in, canary_out, errors) = (load(&canary.events_in), load(&canary.events_out), load(&canary.errors));
    for condition in conditions {
        let value = match condition.measure {
            CanaryMeasure::Errors => errors as f64,
            CanaryMeasure::OutRatio if stable_in < RATIO_AFTER_EVENTS || canary_in < RATIO_AFTER_EVENTS => continue,
            CanaryMeasure::OutRatio => {
                let per_event = |out: u64, events: u64| out as f64 / events as f64;
                match per_event(stable_out, stable_in) {
                    0.0 if canary_out == 0 => 1.0,
                    0.0 => f64::INFINITY,
                    old => per_event(canary_out, canary_in) / old,
                }
            }
        };
        if condition.holds(value) {
            return Some(format!(
                "`{condition}` held ({value:.3}): its canary {} emitted {canary_out} events for {canary_in} with \
                 {errors} failed calls, its module {} {stable_out} for {stable_in}",
                canary.module, stable.module
            ));
        }
    }
    None
}

/// How a failure that an operator's canary abort condition caused begins.
pub const CANARY_ABORT_CONDITION: &str = "the canary's abort condition held";

/// One part of a subtask's key groups and the operator instance that serves it.
pub struct Part {
    /// Its key groups.
    pub key_groups: Range<u32>,
    /// The module's instance over them.
    pub operator: Box<dyn Operator>,
    /// Which of the operator's [`ModuleVersions`] it runs.
    pub version: usize,
}

/// A subtask's operator split by key groups into parts, each run by its own instance.
pub struct KeyRangeOperator {
    parts: Vec<Part>,
    max_parallelism: u32,
    versions: Arc<ModuleVersions>,
    /// Each part's share of the batch being processed, reused.
    split: Vec<EventBatch>,
    /// Within an advance of time: the parts that have fired every timer due.
    advanced: Vec<bool>,
    /// Conditions on what the versions counted that abort the canary.
    abort_if: Arc<Vec<CanaryAbortIf>>,
}

impl KeyRangeOperator {
    /// Runs `parts` (in key group order, together the subtask's key groups) of an operator with
    /// `max_parallelism` key groups, counting each part's work for its version in `versions`;
    /// fails, saying why, once one of `abort_if` holds of them (the job then aborts the canary).
    pub fn new(
        parts: Vec<Part>,
        max_parallelism: u32,
        versions: Arc<ModuleVersions>,
        abort_if: Arc<Vec<CanaryAbortIf>>,
    ) -> Self {
        let n = parts.len();
        KeyRangeOperator {
            parts,
            max_parallelism,
            versions,
            split: (0..n).map(|_| EventBatch::default()).collect(),
            advanced: vec![false; n],
            abort_if,
        }
    }

    /// Fails once one of its abort conditions holds.
    fn judge(&self) -> Result<(), String> {
        if self.abort_if.is_empty() {
            return Ok(());
        }
        match judge(&self.abort_if, &self.versions) {
            Some(why) => Err(format!("{CANARY_ABORT_CONDITION}: {why}")),
            None => Ok(()),
        }
    }

    /// The part that owns `key`'s key group (the first for an event without a key).
    fn part_of(&self, key: Option<&[u8]>) -> usize {
        let Some(key) = key else { return 0 };
        let kg = u32::from(key_group(key, self.max_parallelism));
        self.parts.iter().position(|p| p.key_groups.contains(&kg)).unwrap_or(0)
    }

    /// Runs `call` on part `i`, counting its time, what it emitted into `out` and its failure
    /// (which names the module version that failed).
    fn counted(
        &mut self,
        i: usize,
        out: &mut Emitted,
        call: impl FnOnce(&mut dyn Operator, &mut Emitted) -> Result<bool, String>,
    ) -> Result<bool, String> {
        let part = &mut self.parts[i];
        let version = &self.versions[part.version];
        let (before, quarantined) = (emitted(out), out.quarantined);
        let start = clock_ns();
        let result = call(&mut *part.operator, out);
        version.busy_ns.fetch_add(clock_ns() - start, Ordering::Relaxed);
        // What it set aside (`on-error = "quarantine"`) failed in its module: errors, not output.
        let set_aside = out.quarantined - quarantined;
        version.events_out.fetch_add((emitted(out) - before) as u64 - set_aside, Ordering::Relaxed);
        version.errors.fetch_add(set_aside, Ordering::Relaxed);
        result.map_err(|e| {
            version.errors.fetch_add(1, Ordering::Relaxed);
            let role = match version.role {
                VersionRole::Stable => "its own module",
                VersionRole::Canary => "its canary module",
            };
            format!("{role} {} (key groups {:?}): {e}", version.module, part.key_groups)
        })
    }
}

/// Events in `out`, on every output.
fn emitted(out: &Emitted) -> usize {
    out.main.len() + out.side.iter().map(EventBatch::len).sum::<usize>()
}

impl Operator for KeyRangeOperator {
    fn process(&mut self, input: usize, batch: &EventBatch, out: &mut Emitted) -> Result<(), String> {
        for event in batch.iter() {
            let i = self.part_of(event.key);
            self.split[i].push(event);
        }
        for i in 0..self.parts.len() {
            let part = std::mem::take(&mut self.split[i]);
            if part.is_empty() {
                continue;
            }
            self.versions[self.parts[i].version].events_in.fetch_add(part.len() as u64, Ordering::Relaxed);
            let result = self.counted(i, out, |op, out| op.process(input, &part, out).map(|()| true));
            self.split[i] = part;
            self.split[i].clear();
            result?;
        }
        self.judge()
    }

    fn advance_time(&mut self, watermark: i64, out: &mut Emitted) -> Result<bool, String> {
        // One batch of timers per call, part after part: each part's advance ends as its own.
        while let Some(i) = self.advanced.iter().position(|done| !done) {
            if self.counted(i, out, |op, out| op.advance_time(watermark, out))? {
                return Ok(true);
            }
            self.advanced[i] = true;
        }
        self.advanced.iter_mut().for_each(|done| *done = false);
        Ok(false)
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.parts.iter().filter_map(|p| p.operator.next_processing_timer()).min()
    }

    fn snapshot(&mut self) -> Result<Vec<StateSnapshot>, String> {
        let mut snapshots = Vec::with_capacity(self.parts.len());
        for part in &mut self.parts {
            snapshots.extend(part.operator.snapshot()?);
        }
        Ok(snapshots)
    }

    fn freeze(&mut self, cuts: &[u32]) -> Result<Vec<StateSnapshot>, String> {
        let mut snapshots = Vec::with_capacity(self.parts.len());
        for part in &mut self.parts {
            snapshots.extend(part.operator.freeze(cuts)?);
        }
        Ok(snapshots)
    }

    fn into_state(self: Box<Self>) -> Vec<super::HandedOverState> {
        self.parts.into_iter().flat_map(|part| part.operator.into_state()).collect()
    }

    fn fork_state(&mut self) -> Result<super::ForkedState, String> {
        Err("it runs a canary beside its module: promote or abort the canary before shadowing it".to_string())
    }

    fn memory_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.operator.memory_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Emits each event's key, tagged with its name; keeps no state; fires one timer batch per
    /// advance while it has `timers` left.
    struct Tagging {
        name: &'static str,
        timers: u32,
    }

    impl Operator for Tagging {
        fn process(&mut self, _input: usize, batch: &EventBatch, out: &mut Emitted) -> Result<(), String> {
            for event in batch.iter() {
                let key = event.key.unwrap_or_default();
                if key.starts_with(b"poison") {
                    return Err("poisoned".to_string());
                }
                out.main.push_with(event.key, None, |b| b.extend_from_slice(self.name.as_bytes()));
            }
            Ok(())
        }

        fn advance_time(&mut self, _watermark: i64, out: &mut Emitted) -> Result<bool, String> {
            if self.timers == 0 {
                return Ok(false);
            }
            self.timers -= 1;
            out.main.push_with(None, None, |b| b.extend_from_slice(self.name.as_bytes()));
            Ok(true)
        }

        fn snapshot(&mut self) -> Result<Vec<StateSnapshot>, String> {
            Ok(Vec::new())
        }
    }

    fn split(timers: u32) -> (KeyRangeOperator, Arc<ModuleVersions>) {
        let versions = Arc::new(vec![
            ModuleVersion::new(VersionRole::Stable, "old".to_string(), 13..128),
            ModuleVersion::new(VersionRole::Canary, "new".to_string(), 0..13),
        ]);
        let parts = vec![
            Part { key_groups: 0..13, operator: Box::new(Tagging { name: "new", timers }), version: 1 },
            Part { key_groups: 13..64, operator: Box::new(Tagging { name: "old", timers }), version: 0 },
        ];
        (KeyRangeOperator::new(parts, 128, versions.clone(), Arc::default()), versions)
    }

    #[test]
    fn each_event_goes_to_the_part_of_its_key_group_and_is_counted_for_its_version() {
        let (mut operator, versions) = split(0);
        let keys: Vec<String> =
            (0..200).map(|i| format!("k{i}")).filter(|k| key_group(k.as_bytes(), 128) < 64).collect();
        let mut batch = EventBatch::default();
        keys.iter().for_each(|k| batch.push_with(Some(k.as_bytes()), None, |b| b.push(b'x')));
        let mut out = Emitted::default();
        operator.process(0, &batch, &mut out).unwrap();
        assert_eq!(out.main.len(), keys.len());
        for event in out.main.iter() {
            let canary = key_group(event.key.unwrap(), 128) < 13;
            assert_eq!(event.value, if canary { b"new".as_slice() } else { b"old".as_slice() });
        }
        let canary_keys = keys.iter().filter(|k| key_group(k.as_bytes(), 128) < 13).count() as u64;
        let [old, new] = [versions[0].summary(), versions[1].summary()];
        assert!(canary_keys > 0 && canary_keys < keys.len() as u64);
        assert_eq!((new.events_in, new.events_out), (canary_keys, canary_keys));
        assert_eq!((old.events_in, old.events_out), (keys.len() as u64 - canary_keys, keys.len() as u64 - canary_keys));
    }

    #[test]
    fn timers_fire_part_after_part_and_a_failure_names_the_version() {
        let (mut operator, versions) = split(2);
        let mut fired = Vec::new();
        let mut out = Emitted::default();
        while operator.advance_time(0, &mut out).unwrap() {
            fired.extend(out.main.iter().map(|e| String::from_utf8(e.value.to_vec()).unwrap()));
            out.main.clear();
        }
        assert_eq!(fired, ["new", "new", "old", "old"]);
        // A key of this subtask's key groups (below 64).
        let poison = (0..).map(|i| format!("poison{i}")).find(|k| key_group(k.as_bytes(), 128) < 64).unwrap();
        let mut batch = EventBatch::default();
        batch.push_with(Some(poison.as_bytes()), None, |b| b.push(b'x'));
        let err = operator.process(0, &batch, &mut out).unwrap_err();
        let role = if key_group(poison.as_bytes(), 128) < 13 { 1 } else { 0 };
        assert!(err.contains(if role == 1 { "its canary module new" } else { "its own module old" }), "{err}");
        assert!(err.ends_with("poisoned"), "{err}");
        assert_eq!(versions[role].summary().errors, 1);
    }

    #[test]
    fn a_canary_is_judged_by_its_errors_and_by_its_output_per_event_against_the_old_module() {
        let versions = vec![
            ModuleVersion::new(VersionRole::Stable, "old".to_string(), 13..128),
            ModuleVersion::new(VersionRole::Canary, "new".to_string(), 0..13),
        ];
        let conditions: Vec<CanaryAbortIf> = ["errors>0", "out-ratio<0.5"].iter().map(|c| c.parse().unwrap()).collect();
        assert_eq!(judge(&conditions, &versions), None);
        let count = |v: &ModuleVersion, events_in: u64, events_out: u64| {
            v.events_in.store(events_in, Ordering::Relaxed);
            v.events_out.store(events_out, Ordering::Relaxed);
        };
        // Too few events to judge a ratio; then the canary emits a third as much per event.
        count(&versions[0], 5000, 5000);
        count(&versions[1], 999, 0);
        assert_eq!(judge(&conditions, &versions), None);
        count(&versions[1], 3000, 1000);
        let why = judge(&conditions, &versions).unwrap();
        assert!(why.starts_with("`out-ratio<0.5` held (0.333): its canary new emitted 1000 events for 3000"), "{why}");
        versions[1].errors.store(1, Ordering::Relaxed);
        assert!(judge(&conditions, &versions).unwrap().starts_with("`errors>0` held (1.000)"));
    }
}
