//! Shadow runs: a new module processing an operator's live input beside the module that runs it,
//! on a copy-on-write view of the live state taken when it joins ([`Operator::fork_state`]), its
//! own writes kept apart and its output compared with the live output, never sent on.
//!
//! Each operator subtask joins a run of its operator at its next batch, on its own thread:
//! after every call of the live operator (a batch, or a batch of timers fired) the shadow gets
//! the same call, and the two outputs are compared line by line, per output and per output key,
//! in order. What it costs in memory (its writes, the live operator's writes kept apart from the
//! shared state, its instance) is bounded: past the limit the shadow stops, and so does it when
//! its module fails; the job goes on either way. A restart of the job's run forks the state
//! again from what it restored; an upgrade of the operator ends the run.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{Emitted, EventBatch, ForkedState, Operator, SubtaskInfo};

/// Most differences a shadow run keeps as samples.
pub const MOST_DIFFERENCES: usize = 20;

/// Opens a shadow's operator subtask on the state forked from the live one.
pub trait ShadowFactory: Send + Sync {
    /// The shadow of subtask `info`, on `forked`.
    fn create(&self, info: &SubtaskInfo, forked: ForkedState) -> Result<Box<dyn Operator>, String>;
}

/// How a shadow run compares and what it may hold.
#[derive(Debug, Clone)]
pub struct ShadowOptions {
    /// Top-level fields of JSON output lines left out of the comparison (a field the new module
    /// adds on purpose).
    pub ignore: Vec<String>,
    /// Bytes of memory it may cost, all its subtasks together, before it stops.
    pub memory_limit: u64,
    /// Conditions on what it found that stop it as soon as one holds.
    pub abort_if: Vec<AbortIf>,
}

/// A condition that stops a shadow run by itself (`--abort-if`): a count of its lines, or their
/// share of the lines compared, over a bound: `differing>0`, `different-ratio>0.01`.
pub type AbortIf = super::abort_if::AbortIf<Measure>;

/// What a shadow's `--abort-if` condition measures.
#[derive(Debug, Clone, Copy)]
pub enum Measure {
    /// Lines both wrote, unequal.
    Differing,
    /// Lines only the live module wrote.
    Missing,
    /// Lines only the shadow wrote.
    Extra,
    /// Differing, missing and extra lines.
    Different,
    /// Those, per line compared (equal ones too).
    DifferentRatio,
}

impl std::str::FromStr for AbortIf {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let measures = [
            ("differing", Measure::Differing, "lines that differ"),
            ("missing", Measure::Missing, "lines only the live module wrote"),
            ("extra", Measure::Extra, "lines only the shadow wrote"),
            ("different", Measure::Different, "all three"),
            ("different-ratio", Measure::DifferentRatio, "their share of the lines compared"),
        ];
        AbortIf::parse(text, &measures)
    }
}

/// One shadow run of one operator.
pub struct ShadowRun {
    uid: String,
    module: String,
    factory: Box<dyn ShadowFactory>,
    options: ShadowOptions,
    started_ms: u64,
    stopped: AtomicBool,
    why_stopped: Mutex<Option<String>>,
    joined: AtomicU32,
    calls: AtomicU64,
    equal: AtomicU64,
    differing: AtomicU64,
    missing: AtomicU64,
    extra: AtomicU64,
    memory: AtomicI64,
    largest_memory: AtomicI64,
    differences: Mutex<Vec<Difference>>,
}

/// What a shadow run found so far: `GET /v1/jobs/{id}/shadow`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ShadowReport {
    /// The operator.
    pub uid: String,
    /// The shadow's module: name, version and the start of its SHA-256.
    pub module: String,
    /// `running` or `stopped`.
    pub status: &'static str,
    /// Why it stopped.
    pub stopped_because: Option<String>,
    /// When it was asked for (milliseconds since the Unix epoch).
    pub started_at: u64,
    /// Operator subtasks that joined it (each at its first batch after the request).
    pub subtasks: u32,
    /// Calls of the operator it repeated (batches, and batches of timers).
    pub calls: u64,
    /// Output lines the same from both modules.
    pub equal: u64,
    /// Lines both wrote, differently.
    pub differing: u64,
    /// Lines the live module wrote and the shadow did not.
    pub missing: u64,
    /// Lines the shadow wrote and the live module did not.
    pub extra: u64,
    /// Bytes of memory it costs now, about: its writes, the live operator's writes kept apart
    /// meanwhile, its instance.
    pub memory_bytes: u64,
    /// The most it cost.
    pub largest_memory_bytes: u64,
    /// The limit it stops at.
    pub memory_limit: u64,
    /// Fields left out of the comparison.
    pub ignore: Vec<String>,
    /// The first differences (at most [`MOST_DIFFERENCES`]).
    pub differences: Vec<Difference>,
}

/// A line that differs between the live output and the shadow's.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Difference {
    /// `main`, or `side N` for side output N.
    pub output: String,
    /// The output line's key (text where it is UTF-8; empty when it has none).
    pub key: String,
    /// What the live module wrote (none: it wrote nothing there).
    pub live: Option<String>,
    /// What the shadow wrote.
    pub shadow: Option<String>,
}

impl ShadowRun {
    /// A run of `module` (as reports name it) beside operator `uid`, its subtasks opened by
    /// `factory`.
    pub fn new(uid: &str, module: String, factory: Box<dyn ShadowFactory>, options: ShadowOptions) -> Self {
        ShadowRun {
            uid: uid.to_string(),
            module,
            factory,
            options,
            started_ms: super::now_ms(),
            stopped: AtomicBool::new(false),
            why_stopped: Mutex::new(None),
            joined: AtomicU32::new(0),
            calls: AtomicU64::new(0),
            equal: AtomicU64::new(0),
            differing: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            extra: AtomicU64::new(0),
            memory: AtomicI64::new(0),
            largest_memory: AtomicI64::new(0),
            differences: Mutex::new(Vec::new()),
        }
    }

    /// Stops it (the first reason given is kept): each subtask drops its shadow at its next call.
    pub fn stop(&self, why: String) {
        if let Ok(mut stopped) = self.why_stopped.lock() {
            stopped.get_or_insert_with(|| {
                tracing::info!("the shadow of operator '{}' stopped: {why}", self.uid);
                why
            });
        }
        self.stopped.store(true, Ordering::SeqCst);
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// What it found so far.
    pub fn report(&self) -> ShadowReport {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ShadowReport {
            uid: self.uid.clone(),
            module: self.module.clone(),
            status: if self.is_stopped() { "stopped" } else { "running" },
            stopped_because: self.why_stopped.lock().ok().and_then(|w| w.clone()),
            started_at: self.started_ms,
            subtasks: self.joined.load(Ordering::Relaxed),
            calls: count(&self.calls),
            equal: count(&self.equal),
            differing: count(&self.differing),
            missing: count(&self.missing),
            extra: count(&self.extra),
            memory_bytes: self.memory.load(Ordering::Relaxed).max(0) as u64,
            largest_memory_bytes: self.largest_memory.load(Ordering::Relaxed).max(0) as u64,
            memory_limit: self.options.memory_limit,
            ignore: self.options.ignore.clone(),
            differences: self.differences.lock().map(|d| d.clone()).unwrap_or_default(),
        }
    }

    fn add(&self, tally: Tally) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        for (counter, n) in [
            (&self.equal, tally.equal),
            (&self.differing, tally.differing),
            (&self.missing, tally.missing),
            (&self.extra, tally.extra),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        if !tally.samples.is_empty()
            && let Ok(mut kept) = self.differences.lock()
        {
            let room = MOST_DIFFERENCES.saturating_sub(kept.len());
            kept.extend(tally.samples.into_iter().take(room));
        }
        self.judge();
    }

    /// Stops it when one of its abort conditions holds.
    fn judge(&self) {
        if self.options.abort_if.is_empty() {
            return;
        }
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let (equal, differing, missing, extra) =
            (count(&self.equal), count(&self.differing), count(&self.missing), count(&self.extra));
        let different = differing + missing + extra;
        for condition in &self.options.abort_if {
            let value = match condition.measure {
                Measure::Differing => differing,
                Measure::Missing => missing,
                Measure::Extra => extra,
                Measure::Different => different,
                Measure::DifferentRatio => different / (equal + different).max(1.0),
            };
            if condition.holds(value) {
                self.stop(format!(
                    "`{condition}` held ({value} after {} lines compared: {differing} differing, {missing} missing, \
                     {extra} extra); the job goes on",
                    equal + different
                ));
                return;
            }
        }
    }

    /// Notes that one subtask's cost changed by `change` bytes; stops the run past its limit.
    fn cost_changed(&self, change: i64) {
        let now = self.memory.fetch_add(change, Ordering::Relaxed) + change;
        self.largest_memory.fetch_max(now, Ordering::Relaxed);
        if now > self.options.memory_limit as i64 {
            self.stop(format!(
                "it held about {} of memory, over its limit of {}; the job goes on (ask for a higher \
                 `memory-limit`, or shadow a shorter stretch)",
                bytesize::ByteSize(now as u64),
                bytesize::ByteSize(self.options.memory_limit)
            ));
        }
    }
}

/// A job's shadow runs, the same across its runs: the running ones, and the last of each
/// operator once stopped, for its report.
#[derive(Default)]
pub struct Shadows {
    /// Whether any runs: the one check a batch costs otherwise.
    armed: AtomicBool,
    runs: Mutex<HashMap<String, Arc<ShadowRun>>>,
}

impl Shadows {
    /// Starts `run`, stopping an earlier one of its operator.
    pub fn start(&self, run: ShadowRun) {
        let Ok(mut runs) = self.runs.lock() else { return };
        if let Some(earlier) = runs.insert(run.uid.clone(), Arc::new(run)) {
            earlier.stop("a new shadow of the operator replaced it".to_string());
        }
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Stops operator `uid`'s run, if one runs, for `why`.
    pub fn stop(&self, uid: &str, why: &str) {
        if let Some(run) = self.runs.lock().ok().and_then(|runs| runs.get(uid).cloned()) {
            run.stop(why.to_string());
        }
        self.rearm();
    }

    /// Stops every run, for `why`.
    pub fn stop_all(&self, why: &str) {
        for run in self.runs.lock().map(|runs| runs.values().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            run.stop(why.to_string());
        }
        self.rearm();
    }

    fn rearm(&self) {
        if let Ok(runs) = self.runs.lock() {
            self.armed.store(runs.values().any(|r| !r.is_stopped()), Ordering::SeqCst);
        }
    }

    /// The reports of every run, by operator.
    pub fn reports(&self) -> Vec<ShadowReport> {
        let Ok(runs) = self.runs.lock() else { return Vec::new() };
        let mut reports: Vec<ShadowReport> = runs.values().map(|r| r.report()).collect();
        reports.sort_by(|a, b| a.uid.cmp(&b.uid));
        reports
    }

    /// Operator `uid`'s run, while it runs.
    fn running(&self, uid: &str) -> Option<Arc<ShadowRun>> {
        if !self.armed.load(Ordering::Relaxed) {
            return None;
        }
        self.runs.lock().ok()?.get(uid).filter(|r| !r.is_stopped()).cloned()
    }
}

/// An operator subtask's part in a shadow run: the shadow's own operator subtask, called after
/// the live one.
pub(crate) struct Shadowing {
    current: Option<ShadowSubtask>,
}

struct ShadowSubtask {
    run: Arc<ShadowRun>,
    operator: Box<dyn Operator>,
    out: Emitted,
    index: u32,
    /// The live operator's memory when it joined.
    live_before: u64,
    /// What it last reported it costs.
    cost: i64,
    /// Whether its operator still has timers to fire in the current advance of time.
    advancing: bool,
}

impl Drop for ShadowSubtask {
    fn drop(&mut self) {
        self.run.cost_changed(-self.cost);
    }
}

/// Where a call's output begins in an [`Emitted`] that already holds some.
pub(crate) struct Marks {
    main: usize,
    side: Vec<usize>,
}

impl Shadowing {
    pub(crate) fn new() -> Self {
        Shadowing { current: None }
    }

    /// At a batch's start: leaves a run that stopped, joins one that started (forking `live`'s
    /// state).
    pub(crate) fn keep_up(&mut self, shadows: Option<&Shadows>, live: &mut dyn Operator, info: &SubtaskInfo) {
        if let Some(current) = &self.current {
            if !current.run.is_stopped() {
                return;
            }
            self.current = None;
        }
        let Some(run) = shadows.and_then(|s| s.running(&info.uid)) else { return };
        let live_before = live.memory_bytes();
        match live.fork_state().and_then(|forked| run.factory.create(info, forked)) {
            Ok(operator) => {
                run.joined.fetch_add(1, Ordering::Relaxed);
                self.current = Some(ShadowSubtask {
                    run,
                    operator,
                    out: Emitted::default(),
                    index: info.index,
                    live_before,
                    cost: 0,
                    advancing: false,
                });
            }
            Err(e) => run.stop(format!("subtask {} could not start it: {e}", info.index)),
        }
    }

    /// Where the next call's output will begin in `out`, while a shadow runs.
    pub(crate) fn marks(&self, out: &Emitted) -> Option<Marks> {
        self.current
            .as_ref()
            .map(|_| Marks { main: out.main.len(), side: out.side.iter().map(EventBatch::len).collect() })
    }

    /// The shadow processes `batch` as the live operator did, its output compared with what the
    /// live call appended to `live_out` (after `marks`).
    pub(crate) fn process(
        &mut self,
        input: usize,
        batch: &EventBatch,
        live_out: &Emitted,
        marks: Option<Marks>,
        live: &dyn Operator,
    ) {
        let Some(current) = &mut self.current else { return };
        let result = current.operator.process(input, batch, &mut current.out);
        current.settle(result, live_out, marks, live);
    }

    /// The shadow fires a batch of the timers due at `watermark`, as the live operator just did
    /// (appending to `live_out` after `marks`).
    pub(crate) fn advance(&mut self, watermark: i64, live_out: &Emitted, marks: Option<Marks>, live: &dyn Operator) {
        let Some(current) = &mut self.current else { return };
        let result = current.operator.advance_time(watermark, &mut current.out);
        current.advancing = matches!(result, Ok(true));
        current.settle(result.map(drop), live_out, marks, live);
    }

    /// The live operator fired every timer due at `watermark`: so does the shadow, each of its
    /// batches compared with nothing.
    pub(crate) fn finish_advance(&mut self, watermark: i64, live: &dyn Operator) {
        let empty = Emitted::default();
        while self.current.as_ref().is_some_and(|c| c.advancing && !c.run.is_stopped()) {
            self.advance(watermark, &empty, None, live);
        }
    }
}

impl ShadowSubtask {
    /// After a call: compares its output, notes its cost, or stops the run when it failed.
    fn settle(&mut self, result: Result<(), String>, live_out: &Emitted, marks: Option<Marks>, live: &dyn Operator) {
        if let Err(e) = result {
            self.run.stop(format!("its module failed in subtask {}: {e}; the job goes on", self.index));
            self.out = Emitted::default();
            return;
        }
        let from = marks.unwrap_or(Marks { main: 0, side: Vec::new() });
        self.run.add(compare(live_out, &from, &self.out, &self.run.options.ignore));
        self.out.main.clear();
        self.out.side.iter_mut().for_each(EventBatch::clear);
        let cost = self.operator.memory_bytes() + live.memory_bytes().saturating_sub(self.live_before);
        let cost = cost as i64;
        if cost != self.cost {
            self.run.cost_changed(cost - self.cost);
            self.cost = cost;
        }
    }
}

/// What one comparison found.
#[derive(Default)]
struct Tally {
    equal: u64,
    differing: u64,
    missing: u64,
    extra: u64,
    samples: Vec<Difference>,
}

/// Compares what the live call appended to `live` (after `from`) with `shadow`: per output and
/// output key, line by line in order.
fn compare(live: &Emitted, from: &Marks, shadow: &Emitted, ignore: &[String]) -> Tally {
    let live_part = |k: u8, batch: &EventBatch| {
        let start = if k == 0 { from.main } else { from.side.get(k as usize - 1).copied().unwrap_or(0) };
        start.min(batch.len())..batch.len()
    };
    let mut tally = Tally::default();
    // The usual case, outputs of the same keys in the same order: the lines pair up as they
    // stand, and nothing needs grouping.
    let aligned = (0..=live.side.len().max(shadow.side.len()) as u8).all(|k| {
        let (l, s) = (stream(live, k), stream(shadow, k));
        let part = live_part(k, l);
        part.len() == s.len() && part.zip(0..s.len()).all(|(i, j)| l.get(i).key == s.get(j).key)
    });
    if aligned {
        for k in 0..=live.side.len() as u8 {
            let (l, s) = (stream(live, k), stream(shadow, k));
            for (i, j) in live_part(k, l).zip(0..s.len()) {
                let (l, s) = (l.get(i), s.get(j));
                tally.note(k, l.key.unwrap_or_default(), Some(l.value), Some(s.value), ignore);
            }
        }
        return tally;
    }
    type Lines<'a> = (Vec<&'a [u8]>, Vec<&'a [u8]>);
    let mut groups: BTreeMap<(u8, &[u8]), Lines<'_>> = BTreeMap::new();
    for k in 0..=live.side.len() as u8 {
        let batch = stream(live, k);
        for i in live_part(k, batch) {
            let e = batch.get(i);
            groups.entry((k, e.key.unwrap_or_default())).or_default().0.push(e.value);
        }
    }
    for k in 0..=shadow.side.len() as u8 {
        for e in stream(shadow, k).iter() {
            groups.entry((k, e.key.unwrap_or_default())).or_default().1.push(e.value);
        }
    }
    for ((k, key), (live, shadow)) in groups {
        for i in 0..live.len().max(shadow.len()) {
            tally.note(k, key, live.get(i).copied(), shadow.get(i).copied(), ignore);
        }
    }
    tally
}

impl Tally {
    /// Counts one pair of lines of output `k` and key `key` (either missing), keeping a sample
    /// of a difference.
    fn note(&mut self, k: u8, key: &[u8], live: Option<&[u8]>, shadow: Option<&[u8]>, ignore: &[String]) {
        match (live, shadow) {
            (Some(l), Some(s)) if same_line(l, s, ignore) => {
                self.equal += 1;
                return;
            }
            (Some(_), Some(_)) => self.differing += 1,
            (Some(_), None) => self.missing += 1,
            (None, _) => self.extra += 1,
        }
        if self.samples.len() < MOST_DIFFERENCES {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            self.samples.push(Difference {
                output: if k == 0 { "main".to_string() } else { format!("side {k}") },
                key: text(key),
                live: live.map(text),
                shadow: shadow.map(text),
            });
        }
    }
}

/// Output `k` of `out` (0 the main one, k side output k): empty where it emitted nothing there.
fn stream(out: &Emitted, k: u8) -> &EventBatch {
    static EMPTY: std::sync::LazyLock<EventBatch> = std::sync::LazyLock::new(EventBatch::default);
    match k {
        0 => &out.main,
        k => out.side.get(k as usize - 1).unwrap_or(&EMPTY),
    }
}

/// Whether two output lines are the same, the fields `ignore` names aside when both are JSON
/// objects.
fn same_line(a: &[u8], b: &[u8], ignore: &[String]) -> bool {
    if a == b {
        return true;
    }
    if ignore.is_empty() {
        return false;
    }
    let parse = |bytes: &[u8]| match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(mut fields)) => {
            ignore.iter().for_each(|f| drop(fields.remove(f)));
            Some(fields)
        }
        _ => None,
    };
    matches!((parse(a), parse(b)), (Some(a), Some(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitted(lines: &[(&str, &str)]) -> Emitted {
        let mut out = Emitted::default();
        for (key, value) in lines {
            let key = (!key.is_empty()).then_some(key.as_bytes());
            out.main.push_with(key, None, |v| v.extend_from_slice(value.as_bytes()));
        }
        out
    }

    #[test]
    fn lines_are_compared_per_key_in_order_with_ignored_fields_left_out() {
        let live = emitted(&[("", r#"{"n":1}"#), ("a", "x"), ("", r#"{"n":2}"#), ("a", "y")]);
        let shadow = emitted(&[("", r#"{"n":1,"v":2}"#), ("a", "x"), ("", r#"{"n":3,"v":2}"#)]);
        let from = Marks { main: 0, side: Vec::new() };
        let tally = compare(&live, &from, &shadow, &["v".to_string()]);
        assert_eq!((tally.equal, tally.differing, tally.missing, tally.extra), (2, 1, 1, 0));
        // Aligned outputs pair up as they stand.
        let aligned = compare(&emitted(&[("a", "1"), ("b", "2")]), &from, &emitted(&[("a", "1"), ("b", "3")]), &[]);
        assert_eq!((aligned.equal, aligned.differing, aligned.samples[0].key.as_str()), (1, 1, "b"));
        assert!("different-ratio > 0.5".parse::<AbortIf>().is_ok());
        assert!("differing>x".parse::<AbortIf>().unwrap_err().contains("`differing>x` is not MEASURE>NUMBER"));
        assert_eq!(tally.samples[0].live.as_deref(), Some(r#"{"n":2}"#));
        assert_eq!(tally.samples[1].key, "a");
        let tally = compare(&live, &from, &shadow, &[]);
        assert_eq!((tally.equal, tally.differing, tally.missing), (1, 2, 1));
        // Only what the call appended counts.
        let from = Marks { main: 2, side: Vec::new() };
        let tally = compare(&live, &from, &emitted(&[("", r#"{"n":2}"#), ("", "z")]), &[]);
        assert_eq!((tally.equal, tally.missing, tally.extra), (1, 1, 1));
    }
}
