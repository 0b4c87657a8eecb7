//! What a running job counts, readable from any thread while it runs and after it ends: events
//! in and out per subtask, CPU time, checkpoint statistics, when operators processed batches, and
//! event time (watermarks, late events).
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::checkpoint_stats::CheckpointStats;
use super::task::VertexKind;
use super::watermarks::NO_WATERMARK;

/// Events counted for one subtask.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SubtaskSummary {
    /// Events received.
    pub events_in: u64,
    /// Events sent downstream (sinks: events written).
    pub events_out: u64,
    /// What its connector reports beside the counts (a Kafka source: offsets and lag per
    /// partition, and the client's latest error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
    /// Event time: a source's generated watermark, an operator's input watermark (milliseconds;
    /// absent until it has one; `9223372036854775807` once its inputs have ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
    /// Operators: events that came at or before their watermark.
    #[serde(default)]
    pub late_events: u64,
    /// Operators with `on-error = "quarantine"`: events they set aside.
    #[serde(default)]
    pub quarantined: u64,
    /// Milliseconds it waited for room downstream, in all (Flink's back-pressured time).
    #[serde(default)]
    pub backpressured_ms: u64,
    /// Operators: milliseconds spent in the operator's calls (a Wasm operator's guest calls:
    /// processing batches and firing timers), in all (Flink's busy time).
    #[serde(default)]
    pub busy_ms: u64,
}

/// Events counted for one vertex over all its subtasks.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VertexSummary {
    /// What the vertex is.
    pub kind: VertexKind,
    /// The vertex's uid.
    pub uid: String,
    /// Its parallelism.
    pub parallelism: u32,
    /// Events received (sources: 0).
    pub events_in: u64,
    /// Events sent downstream (sinks: events written).
    pub events_out: u64,
    /// Events received over every run of the job so far (its attempts, and the runs after its
    /// upgrades and rollbacks), this one included: events replayed after a restart count again.
    #[serde(default)]
    pub total_events_in: u64,
    /// Events sent downstream over every run of the job so far.
    #[serde(default)]
    pub total_events_out: u64,
    /// The lowest watermark of its subtasks (absent until each has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
    /// Late events over all its subtasks.
    #[serde(default)]
    pub late_events: u64,
    /// Events its subtasks set aside on its `quarantine` side output, in this run.
    #[serde(default)]
    pub quarantined: u64,
    /// Milliseconds its subtasks waited for room downstream, summed over them.
    #[serde(default)]
    pub backpressured_ms: u64,
    /// Milliseconds its subtasks spent in the operator's calls, summed over them.
    #[serde(default)]
    pub busy_ms: u64,
    /// Per subtask, in subtask order.
    pub subtasks: Vec<SubtaskSummary>,
    /// CPU seconds its finished subtask threads used, over all subtasks.
    pub cpu_seconds: f64,
    /// For a sink chained into its upstream operator's threads: that operator's uid (its CPU
    /// time then includes the sink's).
    pub chained_into: Option<String>,
    /// Operators running a canary: what each module version served (see
    /// [`super::key_ranges`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<super::key_ranges::VersionSummary>,
    /// What it reads: the job graph's edges into it (none for a source).
    #[serde(default)]
    pub inputs: Vec<InputSummary>,
}

/// An edge of the job's graph, as the vertex reading it lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct InputSummary {
    /// The uid of the vertex read.
    pub from: String,
    /// The side output of it read (job files name it `"from.output"`); absent: its main output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// `forward`, `hash`, `rebalance` or `broadcast`.
    pub partitioning: String,
    /// Milliseconds the subtasks sending on it waited for room in it, summed over them (the
    /// edge's share of their backpressure; 0 for a sink chained into the operator it reads).
    #[serde(default)]
    pub backpressured_ms: u64,
}

/// A vertex by its kind and uid.
type VertexKey = (VertexKind, Arc<str>);

/// Live event counts of a job, readable from any thread while it runs and after it ends.
#[derive(Default)]
pub struct JobMetrics {
    pub(crate) vertices: Mutex<Vec<VertexCounters>>,
    /// When the first event reached a sink, in milliseconds since the Unix epoch.
    pub(crate) first_sink_event: std::sync::OnceLock<u64>,
    /// Over all attempts.
    pub(crate) checkpoints: Mutex<CheckpointStats>,
    /// Runs of the job's graph so far (attempts, and restarts after upgrades).
    pub(crate) runs: AtomicU64,
    /// Events in and out of each vertex over the job's earlier runs.
    earlier: Mutex<std::collections::HashMap<VertexKey, (u64, u64)>>,
}

impl JobMetrics {
    /// The checkpoint statistics so far.
    pub fn checkpoints(&self) -> CheckpointStats {
        self.checkpoints.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Updates the checkpoint statistics.
    pub fn checkpoint_stats(&self, update: impl FnOnce(&mut CheckpointStats)) {
        if let Ok(mut stats) = self.checkpoints.lock() {
            update(&mut stats);
        }
    }

    /// A new attempt starts: the vertices' counts start again, added to the totals of the job's
    /// runs (checkpoint statistics go on).
    pub(crate) fn begin_attempt(&self) {
        if let (Ok(mut vertices), Ok(mut earlier)) = (self.vertices.lock(), self.earlier.lock()) {
            for v in vertices.drain(..) {
                let total = earlier.entry((v.kind, v.uid.clone())).or_default();
                for c in &v.subtasks {
                    total.0 += c.events_in.load(Ordering::Relaxed);
                    total.1 += c.events_out.load(Ordering::Relaxed);
                }
            }
        }
        self.runs.fetch_add(1, Ordering::SeqCst);
    }

    /// Takes the totals of a job's earlier runs from their summaries (a job a restarted server
    /// resumes goes on counting from what its record says).
    pub fn carry_over(&self, vertices: &[VertexSummary]) {
        if let Ok(mut earlier) = self.earlier.lock() {
            for v in vertices {
                earlier.insert((v.kind, Arc::from(v.uid.as_str())), (v.total_events_in, v.total_events_out));
            }
        }
    }

    /// How many times the job's graph has started running: the counts are those of the latest.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    /// When the first event reached a sink (milliseconds since the Unix epoch), if one has.
    pub fn first_sink_event_at(&self) -> Option<u64> {
        self.first_sink_event.get().copied()
    }

    /// When operator `uid` processed its first batch in the current attempt and its latest, over
    /// all its subtasks (nanoseconds of the runtime's monotonic clock; 0 when it has processed none).
    pub fn batches_processed(&self, uid: &str) -> (u64, u64) {
        let Ok(vertices) = self.vertices.lock() else { return (0, 0) };
        let subtasks =
            vertices.iter().filter(|v| v.kind == VertexKind::Operator && &*v.uid == uid).flat_map(|v| &v.subtasks);
        subtasks.fold((0, 0), |(first, last), c| {
            let f = c.first_batch_ns.load(Ordering::Relaxed);
            let first = if f != 0 && (first == 0 || f < first) { f } else { first };
            (first, last.max(c.last_batch_ns.load(Ordering::Relaxed)))
        })
    }

    /// The counts so far: sources, then operators, then sinks.
    pub fn snapshot(&self) -> Vec<VertexSummary> {
        let Ok(vertices) = self.vertices.lock() else { return Vec::new() };
        let earlier = self.earlier.lock();
        vertices
            .iter()
            .map(|v| {
                let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
                let subtasks: Vec<SubtaskSummary> = v
                    .subtasks
                    .iter()
                    .map(|c| SubtaskSummary {
                        events_in: load(&c.events_in),
                        events_out: load(&c.events_out),
                        status: c.status.lock().ok().and_then(|s| s.clone()),
                        watermark: c.watermark.get(),
                        late_events: load(&c.late_events),
                        quarantined: load(&c.quarantined),
                        backpressured_ms: load(&c.backpressured_ns) / 1_000_000,
                        busy_ms: load(&c.busy_ns) / 1_000_000,
                    })
                    .collect();
                let (events_in, events_out) =
                    (subtasks.iter().map(|c| c.events_in).sum(), subtasks.iter().map(|c| c.events_out).sum());
                let before = earlier.as_ref().ok().and_then(|e| e.get(&(v.kind, v.uid.clone())).copied());
                let (before_in, before_out) = before.unwrap_or_default();
                VertexSummary {
                    kind: v.kind,
                    uid: v.uid.to_string(),
                    parallelism: v.parallelism,
                    events_in,
                    events_out,
                    total_events_in: before_in + events_in,
                    total_events_out: before_out + events_out,
                    // Flink's "low watermark": none until every subtask has one.
                    watermark: subtasks.iter().map(|c| c.watermark).min().flatten(),
                    late_events: subtasks.iter().map(|c| c.late_events).sum(),
                    quarantined: subtasks.iter().map(|c| c.quarantined).sum(),
                    backpressured_ms: subtasks.iter().map(|c| c.backpressured_ms).sum(),
                    busy_ms: subtasks.iter().map(|c| c.busy_ms).sum(),
                    subtasks,
                    cpu_seconds: v.subtasks.iter().map(|c| load(&c.cpu_ns)).sum::<u64>() as f64 / 1e9,
                    chained_into: v.chained_into.as_ref().map(|uid| uid.to_string()),
                    // One version alone (its restored state split where a canary ended) is no
                    // comparison.
                    versions: v
                        .versions
                        .iter()
                        .filter(|vs| vs.len() > 1)
                        .flat_map(|vs| vs.iter().map(|v| v.summary()))
                        .collect(),
                    inputs: v
                        .inputs
                        .iter()
                        .map(|i| InputSummary {
                            from: i.input.from.to_string(),
                            output: i.input.side_output.as_ref().map(|s| s.name.to_string()),
                            partitioning: i.input.partitioning.name().to_string(),
                            backpressured_ms: load(&i.blocked_ns) / 1_000_000,
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Whether an operator of the current run splits its subtasks' key groups into parts (it
    /// runs a canary, or its state was restored from one).
    pub fn splits_key_groups(&self) -> bool {
        self.vertices.lock().is_ok_and(|vertices| vertices.iter().any(|v| v.versions.is_some()))
    }

    /// Operator `uid` of the current run runs the module versions `versions`.
    pub(crate) fn attach_versions(&self, uid: &str, versions: Arc<super::key_ranges::ModuleVersions>) {
        if let Ok(mut vertices) = self.vertices.lock() {
            let operator = vertices.iter_mut().find(|v| v.kind == VertexKind::Operator && &*v.uid == uid);
            operator.into_iter().for_each(|v| v.versions = Some(versions.clone()));
        }
    }

    pub(crate) fn push(&self, vertex: VertexCounters) {
        if let Ok(mut vertices) = self.vertices.lock() {
            vertices.push(vertex);
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) events_in: AtomicU64,
    pub(crate) events_out: AtomicU64,
    pub(crate) cpu_ns: AtomicU64,
    /// Operators: when they finished processing their first and their latest batch ([`clock_ns`]).
    pub(crate) first_batch_ns: AtomicU64,
    pub(crate) last_batch_ns: AtomicU64,
    /// Sources: what the source last reported of itself ([`crate::runtime::Source::status`]).
    pub(crate) status: Mutex<Option<serde_json::Value>>,
    /// Sources: the watermark they generated; operators: their input watermark.
    pub(crate) watermark: WatermarkGauge,
    /// Operators: events that came at or before their watermark.
    pub(crate) late_events: AtomicU64,
    /// Operators: events set aside on their `quarantine` side output.
    pub(crate) quarantined: AtomicU64,
    /// Nanoseconds spent waiting for room in downstream channels (shared with its `Downstream`).
    pub(crate) backpressured_ns: Arc<AtomicU64>,
    /// Operators: nanoseconds spent in the operator's calls (a Wasm operator's guest calls).
    pub(crate) busy_ns: AtomicU64,
}

/// A subtask's current watermark, [`NO_WATERMARK`] until it has one.
pub(crate) struct WatermarkGauge(AtomicI64);

impl Default for WatermarkGauge {
    fn default() -> Self {
        WatermarkGauge(AtomicI64::new(NO_WATERMARK))
    }
}

impl WatermarkGauge {
    pub(crate) fn set(&self, watermark: i64) {
        self.0.store(watermark, Ordering::Relaxed);
    }

    /// The watermark, if there is one yet.
    fn get(&self) -> Option<i64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&w| w != NO_WATERMARK)
    }
}

/// Nanoseconds on a monotonic clock shared by every job of the process (never 0).
pub(crate) fn clock_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// CPU time used by the calling thread so far (Linux and other Unixes: its CPU-time clock).
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The counters of every subtask of one vertex.
pub(crate) struct VertexCounters {
    pub(crate) kind: VertexKind,
    pub(crate) uid: Arc<str>,
    pub(crate) parallelism: u32,
    pub(crate) subtasks: Vec<Arc<Counters>>,
    pub(crate) chained_into: Option<Arc<str>>,
    pub(crate) inputs: Vec<InputCounters>,
    /// Operators running a canary: the counts of each module version.
    pub(crate) versions: Option<Arc<super::key_ranges::ModuleVersions>>,
}

/// One input edge of a vertex and the time its senders waited for room in it.
pub(crate) struct InputCounters {
    pub(crate) input: super::VertexInput,
    pub(crate) blocked_ns: Arc<AtomicU64>,
}
