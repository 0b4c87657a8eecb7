//! The trial of a new module against a running operator's state, before an upgrade changes
//! anything: in a scratch sandbox (its own instance, the operator's call deadline and memory
//! limit, state in memory that nothing else sees), the new module migrates the state of a sample
//! of key groups as the upgrade would, entry by entry where a batch fails, so that a failure names
//! the key and the entry. What it measures (time to read and to migrate an entry, the module's
//! memory) projects the pause of the whole migration. Then recent input goes through the old
//! module and the new one, side by side.
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::engine::OperatorModule;
use super::host::KeyedState;
use super::instance::{self, GuestInstance};
use super::operator::SandboxLimits;
use crate::checkpoint::Restore;
use crate::key_group::{key_group, key_group_range};
use crate::runtime::{EventBatch, Interrupt, SubtaskInfo, clip};
use crate::state::{self, Backends, StateItem, StateKind, ttl};

/// Most failing entries a trial reports per operator (it stops looking once it has them).
pub const MOST_FAILURES: usize = 5;
/// Most events a trial replays per operator.
pub const MOST_REPLAYED: usize = 10;
/// Entries per `migrate` call, as a restore migrates them (a key group's at most).
const MIGRATE_BATCH: usize = 1024;

/// The operator a trial or a shadow run is of, and the module it would run.
pub struct TrialTarget {
    /// The operator's uid.
    pub uid: String,
    /// The module it would run.
    pub module: Arc<OperatorModule>,
    /// Its configuration, a JSON object as text.
    pub config: String,
    /// Whether it has keyed state.
    pub keyed: bool,
    /// Its sandbox: the trial's too.
    pub limits: SandboxLimits,
    /// Its parallelism, and the job's max parallelism.
    pub parallelism: u32,
    /// The job's number of key groups.
    pub max_parallelism: u32,
    /// Per input, whether it is read by broadcast.
    pub broadcast_inputs: Vec<bool>,
}

impl TrialTarget {
    /// Opens its subtasks as the job does, but in memory and with the state `restore` gives.
    pub(super) fn factory(&self, restore: crate::state::StateRestore) -> super::WasmOperatorFactory {
        super::WasmOperatorFactory::new(
            self.module.clone(),
            self.config.clone(),
            self.keyed,
            self.limits,
            Backends::Memory,
        )
        .reading_broadcast(self.broadcast_inputs.clone())
        .restoring(restore)
    }
}

/// What the trial of one operator found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct OperatorTrial {
    /// The operator's uid.
    pub uid: String,
    /// The new module: name, version and the start of its SHA-256.
    pub module: String,
    /// The key groups whose state it took.
    pub key_groups: Vec<u32>,
    /// Entries of states whose schema changes, read from the sample.
    pub entries: u64,
    /// How many of them migrated.
    pub migrated: u64,
    /// The entries the new module's `migrate` failed on (at most [`MOST_FAILURES`]).
    pub failures: Vec<MigrationFailure>,
    /// Microseconds to read an entry of the sample from the checkpoint.
    pub read_us_per_entry: f64,
    /// Microseconds to migrate one: the guest's `migrate`, and the entry read and written back
    /// where it lies.
    pub migrate_us_per_entry: f64,
    /// The entries of the whole state, projected from the sample.
    pub projected_entries: u64,
    /// The pause migrating them would cost (and reading them first, when the upgrade cannot
    /// hand the state over in place): the subtask with the most key groups, subtasks migrating
    /// together on the machine's cores beside the encoding of the upgrade's savepoint.
    pub projected_pause_ms: f64,
    /// The new module's largest linear memory during the trial.
    pub memory_bytes: u64,
    /// Events the operator processed meanwhile, replayed through the old module and the new one
    /// (at most [`MOST_REPLAYED`]).
    pub replayed: Vec<ReplayedEvent>,
}

/// An event replayed through the old module and the new one, each on the sample's state (the
/// new one's migrated), each going on from its own writes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReplayedEvent {
    /// The event's key and value (text where they are UTF-8).
    pub key: String,
    /// The event's value.
    pub event: String,
    /// What the old module emitted (a side output's lines after `[side N] `).
    pub old: Vec<String>,
    /// What the new module emitted.
    pub new: Vec<String>,
    /// Why the new module failed on it, where it did and the old one did not.
    pub error: Option<String>,
}

/// An entry the new module could not migrate.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationFailure {
    /// The state.
    pub state: String,
    /// The event key (text where it is UTF-8).
    pub key: String,
    /// The entry as saved (text where it is UTF-8).
    pub entry: String,
    /// What `migrate` said.
    pub error: String,
}

/// The `per_subtask` first key groups of each subtask of `target` (all of them when there are
/// fewer): the state a trial takes, a range per subtask.
pub fn sample_key_groups(target: &TrialTarget, per_subtask: u32) -> Vec<Range<u32>> {
    if !target.keyed {
        return Vec::new();
    }
    (0..target.parallelism)
        .map(|i| key_group_range(target.max_parallelism, target.parallelism, i))
        .map(|r| r.start..r.end.min(r.start + per_subtask))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Tries `target`'s new module on the state `restore` holds of `key_groups`. `in_place`: the
/// upgrade would hand the state over in place, so its pause reads nothing back.
pub fn trial(
    target: &TrialTarget,
    restore: &Restore,
    sample: &[Range<u32>],
    in_place: bool,
) -> Result<OperatorTrial, String> {
    let module = &target.module;
    let states = module.states(target.keyed);
    let kinds: Vec<StateKind> = states.iter().map(|s| s.kind).collect();
    let info = trial_subtask(target, 0, 1);
    let instantiated = instance::instantiate(module, KeyedState::empty(kinds.clone()), &target.limits, &info)?;
    let mut guest = GuestInstance::open(module.clone(), instantiated, target.config.clone(), target.limits, info)
        .map_err(|e| format!("the new module of operator '{}' does not open: {e}", target.uid))?;
    let mut report = OperatorTrial {
        uid: target.uid.clone(),
        module: module.label(),
        key_groups: sample.iter().flat_map(Range::clone).collect(),
        entries: 0,
        migrated: 0,
        failures: Vec::new(),
        read_us_per_entry: 0.0,
        migrate_us_per_entry: 0.0,
        projected_entries: 0,
        projected_pause_ms: 0.0,
        memory_bytes: 0,
        replayed: Vec::new(),
    };
    let (mut reading, mut migrating, mut rewriting) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut read_entries = 0u64;
    for key_groups in sample {
        let started = Instant::now();
        let restored = restore.restore_state(&target.uid, &states, &Backends::Memory, &kinds, key_groups.clone())?;
        let migrations = restored.migrations(&states)?;
        let mut entries: Vec<(u32, Vec<u8>, Vec<u8>)> = Vec::new();
        restored
            .backend
            .scan(key_groups.clone(), &mut |e| {
                read_entries += 1;
                if !migrations.iter().any(|m| m.state == e.state) {
                    return;
                }
                let item = match e.item {
                    StateItem::Value(v) | StateItem::MapEntry(_, v) | StateItem::ListElement(v) => v,
                };
                // Entries with a time-to-live keep their expiry: the guest migrates what follows it.
                let skip = if states[e.state as usize].time_to_live.is_some() { ttl::EXPIRY_BYTES } else { 0 };
                entries.push((e.state, e.key.to_vec(), item.get(skip..).unwrap_or_default().to_vec()));
            })
            .map_err(|e| e.to_string())?;
        reading += started.elapsed();
        let started = Instant::now();
        for migration in &migrations {
            let of_state: Vec<&(u32, Vec<u8>, Vec<u8>)> = entries.iter().filter(|e| e.0 == migration.state).collect();
            for batch in of_state.chunks(MIGRATE_BATCH) {
                report.entries += batch.len() as u64;
                let name = &states[migration.state as usize].name;
                report.migrated +=
                    migrate_isolating(&mut guest, name, migration.from_version, batch, &mut report.failures);
            }
        }
        migrating += started.elapsed();
        // What a migration costs the backend beside the guest's calls: every entry read and
        // written back where it lies; in place, into the overlay over the state the stop froze.
        let (frozen, mut backend) = match in_place {
            true => {
                let (frozen, overlay) = state::overlay::freeze(restored.backend, key_groups.clone(), &states);
                (Some(frozen), overlay)
            }
            false => (None, restored.backend),
        };
        let started = Instant::now();
        for migration in &migrations {
            state::rewrite_items(&mut *backend, migration.state, key_groups.clone(), &mut |items| Ok(items))?;
        }
        rewriting += started.elapsed();
        drop((frozen, backend));
    }
    let per_entry = |d: Duration, n: u64| if n == 0 { 0.0 } else { d.as_secs_f64() * 1e6 / n as f64 };
    report.read_us_per_entry = per_entry(reading, read_entries);
    report.migrate_us_per_entry = per_entry(migrating + rewriting, report.entries);
    let sampled = report.key_groups.len();
    if sampled > 0 {
        let scale = |n: u64| n as f64 * f64::from(target.max_parallelism) / sampled as f64;
        report.projected_entries = scale(read_entries) as u64;
        // The subtask with the most key groups migrates its share, and reads its entries first
        // when the state is not handed over in place.
        let busiest = f64::from(target.max_parallelism.div_ceil(target.parallelism.max(1)));
        let per_key_group = |n: u64| n as f64 / sampled as f64;
        let reading = if in_place { 0.0 } else { per_key_group(read_entries) * report.read_us_per_entry };
        // Subtasks migrate side by side, sharing the machine's cores with each other and with
        // the encoding of the upgrade's savepoint.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let sharing = ((f64::from(target.parallelism) + 1.0) / cores).max(1.0);
        report.projected_pause_ms =
            busiest * sharing * (reading + per_key_group(report.entries) * report.migrate_us_per_entry) / 1e3;
    }
    report.memory_bytes = guest.store.data().limits.largest as u64;
    Ok(report)
}

/// Migrates `batch` (state index, key, entry) of state `name` from `from_version`; where the
/// call fails, halves the batch until the failing entries are alone, and records them in
/// `failures` (up to [`MOST_FAILURES`]). How many entries migrated.
fn migrate_isolating(
    guest: &mut GuestInstance,
    name: &str,
    from_version: u32,
    batch: &[&(u32, Vec<u8>, Vec<u8>)],
    failures: &mut Vec<MigrationFailure>,
) -> u64 {
    if batch.is_empty() || failures.len() >= MOST_FAILURES {
        return 0;
    }
    let items: Vec<Vec<u8>> = batch.iter().map(|e| e.2.clone()).collect();
    let error = match guest.migrate(batch[0].0, from_version, &items) {
        Ok(migrated) if migrated.len() == items.len() => return items.len() as u64,
        Ok(migrated) => format!("migrate returned {} items for {}", migrated.len(), items.len()),
        Err(e) => e,
    };
    // After a trap the instance cannot be entered again: what follows runs in a fresh one.
    let renewed = guest.renew();
    if let [(_, key, entry)] = batch {
        failures.push(MigrationFailure {
            state: name.to_string(),
            key: String::from_utf8_lossy(key).into_owned(),
            entry: text(entry),
            error,
        });
        return 0;
    }
    if renewed.is_err() {
        return 0;
    }
    let (first, second) = batch.split_at(batch.len() / 2);
    migrate_isolating(guest, name, from_version, first, failures)
        + migrate_isolating(guest, name, from_version, second, failures)
}

/// Replays the first [`MOST_REPLAYED`] keyed events of `recorded` (batches with their input's
/// index) through `old`'s module on the state `restore` holds of their key groups and `new`'s on
/// it migrated, one event per call, each going on from its own writes. Events of broadcast
/// inputs go, in their place in the recording, to every key group's pair of operators (those
/// opened later get the earlier ones first), as every subtask gets them; they are reported only
/// when the new module fails on one.
pub fn replay(
    old: &TrialTarget,
    new: &TrialTarget,
    restore: &Arc<Restore>,
    recorded: &[(usize, EventBatch)],
) -> Result<Vec<ReplayedEvent>, String> {
    if !new.keyed {
        return Ok(Vec::new());
    }
    let max = new.max_parallelism;
    let by_broadcast = |input: usize| new.broadcast_inputs.get(input).copied().unwrap_or(false);
    // One pair of operators per key group the events fall in, each over that key group's state.
    let mut operators: std::collections::BTreeMap<u32, [Box<dyn crate::runtime::Operator>; 2]> = Default::default();
    let mut broadcasts: Vec<(usize, crate::runtime::Event<'_>)> = Vec::new();
    let mut replayed = Vec::new();
    let mut keyed = 0;
    for (input, event) in recorded.iter().flat_map(|(input, batch)| batch.iter().map(move |e| (*input, e))) {
        if by_broadcast(input) {
            for pair in operators.values_mut() {
                replayed.extend(failed(replay_one(pair, input, event)));
            }
            broadcasts.push((input, event));
            continue;
        }
        let Some(key) = event.key else { continue };
        if keyed == MOST_REPLAYED {
            break;
        }
        keyed += 1;
        let kg = u32::from(key_group(key, max));
        let pair = match operators.entry(kg) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let old_op = key_group_operator(old, restore, kg)?;
                // The new module's restore migrates the key group's state, which may fail; when
                // the old one's cannot be made again either, the state is what failed.
                match key_group_operator(new, restore, kg) {
                    Ok(new) => {
                        let pair = v.insert([old_op, new]);
                        for &(input, earlier) in &broadcasts {
                            replayed.extend(failed(replay_one(pair, input, earlier)));
                        }
                        pair
                    }
                    Err(error) => {
                        key_group_operator(old, restore, kg)?;
                        replayed.push(ReplayedEvent {
                            key: text(key),
                            event: text(event.value),
                            old: Vec::new(),
                            new: Vec::new(),
                            error: Some(error),
                        });
                        break;
                    }
                }
            }
        };
        replayed.push(replay_one(pair, input, event));
    }
    Ok(replayed)
}

/// `replayed`, if the new module failed on it (a broadcast event is reported only then).
fn failed(replayed: ReplayedEvent) -> Option<ReplayedEvent> {
    replayed.error.is_some().then_some(replayed)
}

/// `event` of input `input` through a pair of operators, the old module's and the new one's.
fn replay_one(
    pair: &mut [Box<dyn crate::runtime::Operator>; 2],
    input: usize,
    event: crate::runtime::Event<'_>,
) -> ReplayedEvent {
    let mut batch = EventBatch::default();
    batch.push(event);
    let (old_out, new_out) = (emitted(&mut *pair[0], input, &batch), emitted(&mut *pair[1], input, &batch));
    ReplayedEvent {
        key: text(event.key.unwrap_or_default()),
        event: text(event.value),
        error: match (&old_out, &new_out) {
            (Ok(_), Err(e)) => Some(e.clone()),
            _ => None,
        },
        old: old_out.unwrap_or_default(),
        new: new_out.unwrap_or_default(),
    }
}

/// An event's key or value as a report shows it: text, clipped.
fn text(bytes: &[u8]) -> String {
    clip(&String::from_utf8_lossy(bytes)).to_string()
}

/// A subtask of `target` owning key group `kg` alone, its state restored from `restore`.
fn key_group_operator(
    target: &TrialTarget,
    restore: &Arc<Restore>,
    kg: u32,
) -> Result<Box<dyn crate::runtime::Operator>, String> {
    let info = trial_subtask(target, kg, target.max_parallelism);
    let states = target.module.states(target.keyed);
    let (uid, restore) = (target.uid.clone(), restore.clone());
    let restoring: crate::state::StateRestore = Arc::new(move |backends, kinds, key_groups, _| {
        restore.restore_state(&uid, &states, backends, kinds, key_groups)
    });
    crate::runtime::OperatorFactory::create(&target.factory(restoring), &info)
}

/// The lines `operator` emits for `batch` of input `input`.
fn emitted(
    operator: &mut dyn crate::runtime::Operator,
    input: usize,
    batch: &EventBatch,
) -> Result<Vec<String>, String> {
    let mut out = crate::runtime::Emitted::default();
    operator.process(input, batch, &mut out)?;
    let line = |e: crate::runtime::Event<'_>| String::from_utf8_lossy(e.value).into_owned();
    let mut lines: Vec<String> = out.main.iter().map(line).collect();
    for (k, side) in (1..).zip(&out.side) {
        lines.extend(side.iter().map(|e| format!("[side {k}] {}", line(e))));
    }
    Ok(lines)
}

/// Subtask `index` of `parallelism` of `target`'s operator, as a trial runs it.
fn trial_subtask(target: &TrialTarget, index: u32, parallelism: u32) -> SubtaskInfo {
    SubtaskInfo {
        uid: Arc::from(format!("{} (trial)", target.uid).as_str()),
        index,
        parallelism,
        max_parallelism: target.max_parallelism,
        attempt: 0,
        interrupt: Interrupt::default(),
    }
}
