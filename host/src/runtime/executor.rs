//! Runs a [`JobGraph`]: one thread per subtask (each owns its operator instance, so a Wasm store
//! never crosses threads), bounded channels between them, and the first failure cancels the job.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::channel::{self, ChannelError, Inputs, Message, Output, Received, Route};
use super::checkpoint_stats::{CheckpointStats, SubtaskCheckpoint};
use super::graph::{
    CheckpointConfig, CheckpointSink, Completed, Handover, Interrupt, JobGraph, Partitioning, SavepointRequest,
    SinkCommitted, SinkFactory, SourcePosition, StateFile, StateSnapshot, SubtaskInfo, TaskError, Vertex,
};
use super::key_group::key_group_range;
use super::now_ms;
use super::{BATCH_SIZE, EventBatch};

/// Events counted for one subtask.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SubtaskSummary {
    /// Events received.
    pub events_in: u64,
    /// Events sent downstream (sinks: events written).
    pub events_out: u64,
}

/// Events counted for one vertex over all its subtasks.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VertexSummary {
    /// "source", "operator" or "sink".
    pub kind: String,
    /// The vertex's uid.
    pub uid: String,
    /// Its parallelism.
    pub parallelism: u32,
    /// Events received (sources: 0).
    pub events_in: u64,
    /// Events sent downstream (sinks: events written).
    pub events_out: u64,
    /// Per subtask, in subtask order.
    pub subtasks: Vec<SubtaskSummary>,
    /// CPU seconds its finished subtask threads used, over all subtasks.
    pub cpu_seconds: f64,
    /// For a sink chained into its upstream operator's threads: that operator's uid (its CPU
    /// time then includes the sink's).
    pub chained_into: Option<String>,
}

/// Live event counts of a job, readable from any thread while it runs and after it ends.
#[derive(Default)]
pub struct JobMetrics {
    vertices: Mutex<Vec<VertexCounters>>,
    /// When the first event reached a sink, in milliseconds since the Unix epoch.
    first_sink_event: std::sync::OnceLock<u64>,
    /// Over all attempts.
    checkpoints: Mutex<CheckpointStats>,
    /// Runs of the job's graph so far (attempts, and restarts after upgrades).
    runs: AtomicU64,
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

    /// A new attempt starts: the vertices' counts start again (checkpoint statistics go on).
    fn begin_attempt(&self) {
        if let Ok(mut vertices) = self.vertices.lock() {
            vertices.clear();
        }
        self.runs.fetch_add(1, Ordering::SeqCst);
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
    /// all its subtasks ([`clock_ns`]; 0 when it has processed none).
    pub fn batches_processed(&self, uid: &str) -> (u64, u64) {
        let Ok(vertices) = self.vertices.lock() else { return (0, 0) };
        let subtasks = vertices.iter().filter(|v| v.kind == "operator" && &*v.uid == uid).flat_map(|v| &v.subtasks);
        subtasks.fold((0, 0), |(first, last), c| {
            let f = c.first_batch_ns.load(Ordering::Relaxed);
            let first = if f != 0 && (first == 0 || f < first) { f } else { first };
            (first, last.max(c.last_batch_ns.load(Ordering::Relaxed)))
        })
    }

    /// The counts so far: sources, then operators, then sinks.
    pub fn snapshot(&self) -> Vec<VertexSummary> {
        let Ok(vertices) = self.vertices.lock() else { return Vec::new() };
        vertices
            .iter()
            .map(|v| {
                let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
                let subtasks: Vec<SubtaskSummary> = v
                    .subtasks
                    .iter()
                    .map(|c| SubtaskSummary { events_in: load(&c.events_in), events_out: load(&c.events_out) })
                    .collect();
                VertexSummary {
                    kind: v.kind.to_string(),
                    uid: v.uid.to_string(),
                    parallelism: v.parallelism,
                    events_in: subtasks.iter().map(|c| c.events_in).sum(),
                    events_out: subtasks.iter().map(|c| c.events_out).sum(),
                    subtasks,
                    cpu_seconds: v.subtasks.iter().map(|c| load(&c.cpu_ns)).sum::<u64>() as f64 / 1e9,
                    chained_into: v.chained_into.as_ref().map(|uid| uid.to_string()),
                }
            })
            .collect()
    }

    fn push(&self, vertex: VertexCounters) {
        if let Ok(mut vertices) = self.vertices.lock() {
            vertices.push(vertex);
        }
    }
}

/// Why a job did not finish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobFailure {
    /// A subtask failed.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// The job was cancelled before its sources ended.
    #[error("job was cancelled")]
    Cancelled,
    /// A checkpoint could not be stored.
    #[error("checkpoint {id} failed: {cause}")]
    Checkpoint {
        /// The checkpoint.
        id: u64,
        /// Why.
        cause: String,
    },
    /// A thread of the job panicked: a bug in weir, not in the job.
    #[error("internal error: thread '{thread}' panicked ({message}); please report this as a weir bug")]
    Panicked {
        /// The thread's name.
        thread: String,
        /// What the panic said.
        message: String,
    },
}

#[derive(Default)]
struct Counters {
    events_in: AtomicU64,
    events_out: AtomicU64,
    cpu_ns: AtomicU64,
    /// Operators: when they finished processing their first and their latest batch ([`clock_ns`]).
    first_batch_ns: AtomicU64,
    last_batch_ns: AtomicU64,
}

/// Nanoseconds on a monotonic clock shared by every job of the process (never 0).
pub fn clock_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// CPU time used by the calling thread so far (Linux and other Unixes: its CPU-time clock).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The counters of every subtask of one vertex.
struct VertexCounters {
    kind: &'static str,
    uid: Arc<str>,
    parallelism: u32,
    subtasks: Vec<Arc<Counters>>,
    chained_into: Option<Arc<str>>,
}

/// Shared by every subtask of a run: the first failure, and the flag that stops the sources.
struct Control {
    /// Set from outside to cancel the job.
    cancel: Arc<AtomicBool>,
    /// Set when this attempt fails: it stops this attempt only, not the ones a restart brings.
    stop: Arc<AtomicBool>,
    failure: Mutex<Option<JobFailure>>,
    /// The latest checkpoint the coordinator asked the sources for (0: none yet).
    requested: AtomicU64,
    /// Align barriers before snapshotting.
    exactly_once: bool,
    /// Periodic checkpoints are on: exhausted sources wait for a final checkpoint.
    checkpointing: bool,
    /// Acknowledgements to the checkpoint coordinator.
    acks: crossbeam_channel::Sender<Ack>,
    /// Snapshots to the uploader.
    uploads: crossbeam_channel::Sender<Option<Upload>>,
    /// Where each checkpoint or savepoint in progress is stored, by barrier id.
    targets: Mutex<HashMap<u64, Arc<dyn CheckpointSink>>>,
    /// The barrier of a stop-with-savepoint in progress (0: none): sources stop after it.
    stop_at: AtomicU64,
    /// Set once the checkpoint or savepoint that ends the job has completed (a final checkpoint
    /// taken after every source finished, or a stop's savepoint): the waiting sources end then.
    final_checkpoint_done: AtomicBool,
    /// Where operators leave their state when the job stops for an upgrade.
    handover: Option<Arc<Handover>>,
    /// Set when the stop's savepoint asked for a handover: ending operators leave their state.
    handing_over: AtomicBool,
}

impl Control {
    fn fail(&self, error: impl Into<JobFailure>) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(error.into());
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    fn ack(&self, ack: Ack) {
        let _ = self.acks.send(ack);
    }

    /// True once the attempt must stop: canceled, or failed.
    fn cancelled(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.cancel.load(Ordering::Relaxed)
    }

    /// Where barrier `id`'s snapshots go, while it is in progress.
    fn target(&self, id: u64) -> Option<Arc<dyn CheckpointSink>> {
        self.targets.lock().ok()?.get(&id).cloned()
    }
}

/// One subtask's acknowledgement of a checkpoint.
struct TaskAck {
    uid: Arc<str>,
    subtask: u32,
    /// Sources: where they resume.
    position: Option<SourcePosition>,
    /// Operators with state: the stored snapshot.
    state: Option<StateFile>,
    /// Timings and size, for the statistics.
    stats: SubtaskCheckpoint,
}

impl TaskAck {
    fn new(info: &SubtaskInfo) -> Self {
        TaskAck { uid: info.uid.clone(), subtask: info.index, position: None, state: None, stats: Default::default() }
    }
}

/// What the checkpoint coordinator hears from subtasks.
enum Ack {
    /// A subtask has done its part of checkpoint n.
    Task(u64, TaskAck),
    /// A source is exhausted.
    SourceFinished,
    /// Storing a snapshot of checkpoint n failed.
    Failed(u64, String),
    /// Every subtask has stopped.
    JobEnded,
}

/// A snapshot on its way to storage: the asynchronous part of a checkpoint. `None` on the
/// uploads channel stops the uploader.
struct Upload {
    id: u64,
    snapshot: StateSnapshot,
    ack: TaskAck,
}

/// Stores snapshots as operators hand them over, so that their threads go on processing.
fn upload(uploads: Receiver<Option<Upload>>, control: &Control) {
    while let Ok(Some(Upload { id, snapshot, mut ack })) = uploads.recv() {
        // A checkpoint abandoned meanwhile needs nothing stored.
        let Some(sink) = control.target(id) else { continue };
        let started = Instant::now();
        match sink.write_state(id, &ack.uid, ack.subtask, snapshot) {
            Ok(file) => {
                ack.stats.upload = started.elapsed();
                ack.stats.state_size = file.size;
                ack.state = Some(file);
                control.ack(Ack::Task(id, ack));
            }
            Err(cause) => control.ack(Ack::Failed(id, cause)),
        }
    }
}

/// A checkpoint or savepoint waiting for acknowledgements.
struct Pending {
    started: Instant,
    sources: Vec<SourcePosition>,
    states: Vec<StateFile>,
    acks: usize,
    /// Where it is stored: the job's checkpoint storage, or a savepoint directory.
    sink: Arc<dyn CheckpointSink>,
    /// For a savepoint: who asked for it.
    savepoint: Option<SavepointRequest>,
}

/// Triggers checkpoints (every `interval`, at most `max-concurrent` at once, `min-pause` apart)
/// and the savepoints asked for, completes each once every subtask has acknowledged it, then has
/// the sinks publish their output; abandons those that fail or exceed `timeout`, and fails the
/// job after more than `tolerable-failures` checkpoint failures in a row (a failed savepoint is
/// reported to whoever asked for it instead). Once every source is exhausted it triggers a
/// final checkpoint at once, and lets the sources end when one completes; a stop's savepoint
/// ends them the same way.
struct Coordinator<'a> {
    /// Periodic checkpoints, when on.
    config: Option<&'a CheckpointConfig>,
    control: &'a Control,
    metrics: &'a JobMetrics,
    /// Sinks, by uid: they publish what a completed checkpoint covers, and say what they have
    /// committed for its metadata.
    sinks: Vec<(Arc<str>, Arc<dyn SinkFactory>)>,
    /// False once a handover stop is triggered: the next run's sinks publish from then on.
    publishing: bool,
    /// Acknowledgements that complete a checkpoint: one per source, operator and sink subtask.
    expected: usize,
    sources: usize,
    sources_finished: usize,
    pending: BTreeMap<u64, Pending>,
    next_trigger: Instant,
    /// When the last checkpoint completed or failed, for `min-pause`.
    last_end: Option<Instant>,
    consecutive_failures: u32,
    /// The checkpoint triggered after every source finished, while it is pending.
    final_pending: Option<u64>,
}

/// How long a savepoint may take when the job has no checkpoint `timeout`.
const SAVEPOINT_TIMEOUT: Duration = Duration::from_secs(600);

impl Coordinator<'_> {
    fn run(mut self, acks: Receiver<Ack>, savepoints: Receiver<SavepointRequest>) {
        loop {
            let timeout = self.wake_at().saturating_duration_since(Instant::now());
            let result = crossbeam_channel::select! {
                recv(acks) -> ack => match ack {
                    Ok(Ack::JobEnded) | Err(_) => break,
                    Ok(Ack::SourceFinished) => {
                        self.sources_finished += 1;
                        Ok(())
                    }
                    Ok(Ack::Task(id, ack)) => self.acknowledged(id, ack),
                    Ok(Ack::Failed(id, cause)) => self.failed(id, cause),
                },
                recv(savepoints) -> request => {
                    if let Ok(request) = request {
                        self.savepoint(request);
                    }
                    Ok(())
                },
                default(timeout) => Ok(()),
            };
            if let Err(failure) = result.and_then(|_| self.tick()) {
                self.control.fail(failure);
                break;
            }
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            if let Some(request) = pending.savepoint {
                (request.done)(Err("the job stopped before the savepoint completed".to_string()));
            }
        }
    }

    fn timeout(&self) -> Duration {
        self.config.map_or(SAVEPOINT_TIMEOUT, |c| c.timeout)
    }

    /// When something is due: a pending checkpoint's timeout or the next trigger.
    fn wake_at(&self) -> Instant {
        let timeouts = self.pending.values().map(|p| p.started + self.timeout());
        let trigger =
            self.config.filter(|c| self.checkpoints_pending() < c.max_concurrent as usize).map(|c| self.trigger_due(c));
        timeouts.chain(trigger).min().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    fn checkpoints_pending(&self) -> usize {
        self.pending.values().filter(|p| p.savepoint.is_none()).count()
    }

    fn trigger_due(&self, config: &CheckpointConfig) -> Instant {
        let after_pause = self.last_end.map(|end| end + config.min_pause);
        after_pause.map_or(self.next_trigger, |p| p.max(self.next_trigger))
    }

    /// Expires overdue checkpoints and triggers the next one when it is due.
    fn tick(&mut self) -> Result<(), JobFailure> {
        let now = Instant::now();
        let overdue: Vec<u64> =
            self.pending.iter().filter(|(_, p)| now >= p.started + self.timeout()).map(|(&id, _)| id).collect();
        for id in overdue {
            let acks = self.pending.get(&id).map_or(0, |p| p.acks);
            let timeout = humantime::format_duration(self.timeout());
            let cause = format!("expired after {timeout} with {acks} of {} acknowledgements", self.expected);
            self.failed(id, cause)?;
        }
        let Some(config) = self.config.filter(|_| !self.control.cancelled()) else { return Ok(()) };
        if self.sources_finished == self.sources {
            if self.final_pending.is_none() {
                self.final_pending = Some(self.trigger(config.sink.clone(), None));
            }
        } else if self.checkpoints_pending() < config.max_concurrent as usize && now >= self.trigger_due(config) {
            self.trigger(config.sink.clone(), None);
            self.next_trigger = now + config.interval;
        }
        Ok(())
    }

    /// Starts barrier n for a checkpoint or a savepoint; returns n.
    fn trigger(&mut self, sink: Arc<dyn CheckpointSink>, savepoint: Option<SavepointRequest>) -> u64 {
        let id = self.control.requested.load(Ordering::SeqCst) + 1;
        if let Ok(mut targets) = self.control.targets.lock() {
            targets.insert(id, sink.clone());
        }
        if savepoint.as_ref().is_some_and(|s| s.stop) {
            if savepoint.as_ref().is_some_and(|s| s.handover) {
                self.control.handing_over.store(true, Ordering::SeqCst);
                // The next run publishes what this stop covers when it opens the sinks, while
                // this savepoint may still be stored behind it: the sinks are the next run's now.
                self.publishing = false;
                if let Some(handover) = &self.control.handover {
                    handover.put_sinks(self.sinks_committed(id));
                }
            }
            self.control.stop_at.store(id, Ordering::SeqCst);
        }
        let pending =
            Pending { started: Instant::now(), sources: Vec::new(), states: Vec::new(), acks: 0, sink, savepoint };
        self.pending.insert(id, pending);
        self.metrics.checkpoint_stats(|s| s.triggered(id, now_ms(), self.expected as u64));
        self.control.requested.store(id, Ordering::SeqCst);
        id
    }

    /// A savepoint asked for: its barrier goes out at once, whatever the checkpoint schedule.
    fn savepoint(&mut self, request: SavepointRequest) {
        if self.control.cancelled() || self.control.stop_at.load(Ordering::SeqCst) != 0 {
            (request.done)(Err("the job is stopping".to_string()));
            return;
        }
        self.trigger(request.sink.clone(), Some(request));
    }

    /// Forgets barrier `id`: the uploader stores nothing more of it.
    fn end(&mut self, id: u64) -> Option<Pending> {
        if let Ok(mut targets) = self.control.targets.lock() {
            targets.remove(&id);
        }
        self.pending.remove(&id)
    }

    fn acknowledged(&mut self, id: u64, ack: TaskAck) -> Result<(), JobFailure> {
        // Acknowledgements of a checkpoint that is no longer pending are ignored.
        let Some(p) = self.pending.get_mut(&id) else { return Ok(()) };
        self.metrics.checkpoint_stats(|s| s.acknowledged(id, &ack.uid, now_ms(), &ack.stats));
        p.acks += 1;
        p.sources.extend(ack.position);
        p.states.extend(ack.state);
        if p.acks < self.expected {
            return Ok(());
        }
        let Some(Pending { started, sources, states, sink, savepoint, .. }) = self.end(id) else { return Ok(()) };
        let completed = Completed { sources, states, sinks: self.sinks_committed(id) };
        if let Err(cause) = sink.complete(id, completed) {
            return self.abandon(id, started, savepoint, cause);
        }
        self.metrics.checkpoint_stats(|s| s.completed(id, started.elapsed()));
        let savepoint_stop = savepoint.as_ref().map(|s| s.stop);
        let stop = savepoint_stop == Some(true);
        match savepoint {
            Some(request) => (request.done)(Ok(id)),
            None => {
                self.last_end = Some(Instant::now());
                self.consecutive_failures = 0;
                // Older checkpoints still pending are covered by this one (savepoints are not).
                let older: Vec<u64> =
                    self.pending.range(..id).filter(|(_, p)| p.savepoint.is_none()).map(|(&old, _)| old).collect();
                for old in older {
                    self.end(old);
                    let cause = format!("subsumed by checkpoint {id}");
                    self.metrics.checkpoint_stats(|s| s.failed(old, Duration::ZERO, &cause));
                }
            }
        }
        // Sinks publish at checkpoints and at a stop's savepoint. A savepoint the job goes on
        // after is not a point restarts resume from: what it covers is published with the next
        // checkpoint, so that a failure before then cannot leave output committed twice.
        let publishes = self.publishing && savepoint_stop.is_none_or(|stop| stop);
        for (_, sink) in self.sinks.iter().filter(|_| publishes) {
            sink.commit(id).map_err(|cause| JobFailure::Checkpoint {
                id,
                cause: format!("it completed, but a sink cannot publish its output: {cause}"),
            })?;
        }
        if stop || self.final_pending.is_some_and(|f| id >= f) {
            self.control.final_checkpoint_done.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// What each sink has committed once barrier `id` is.
    fn sinks_committed(&self, id: u64) -> Vec<SinkCommitted> {
        let committed = |(uid, sink): &(Arc<str>, Arc<dyn SinkFactory>)| {
            Some(SinkCommitted { uid: uid.to_string(), committed: sink.committed(id)? })
        };
        self.sinks.iter().filter_map(committed).collect()
    }

    fn failed(&mut self, id: u64, cause: String) -> Result<(), JobFailure> {
        match self.end(id) {
            Some(p) => self.abandon(id, p.started, p.savepoint, cause),
            None => Ok(()),
        }
    }

    /// Counts barrier `id`, triggered at `started`, as failed: a savepoint is reported to its
    /// requester (and a stop is called off); a checkpoint counts against `tolerable-failures`.
    fn abandon(
        &mut self,
        id: u64,
        started: Instant,
        savepoint: Option<SavepointRequest>,
        cause: String,
    ) -> Result<(), JobFailure> {
        self.metrics.checkpoint_stats(|s| s.failed(id, started.elapsed(), &cause));
        if let Some(request) = savepoint {
            if request.stop {
                self.control.stop_at.store(0, Ordering::SeqCst);
            }
            tracing::warn!("savepoint {id} failed: {cause}");
            (request.done)(Err(cause));
            return Ok(());
        }
        self.last_end = Some(Instant::now());
        self.consecutive_failures += 1;
        if self.final_pending == Some(id) {
            self.final_pending = None;
        }
        let tolerable = self.config.map_or(0, |c| c.tolerable_failures);
        if self.consecutive_failures > tolerable {
            let cause = match tolerable {
                0 => cause,
                _ => format!(
                    "{cause} ({} checkpoints in a row failed; tolerable-failures is {tolerable})",
                    self.consecutive_failures
                ),
            };
            return Err(JobFailure::Checkpoint { id, cause });
        }
        tracing::warn!(
            "checkpoint {id} failed: {cause} ({} of {tolerable} tolerable failures in a row)",
            self.consecutive_failures
        );
        Ok(())
    }
}

/// A sink vertex whose factory is shared: subtasks open sinks with it, the checkpoint
/// coordinator has it commit.
struct SinkVertex {
    uid: Arc<str>,
    parallelism: u32,
    input: Partitioning,
    factory: Arc<dyn SinkFactory>,
}

impl From<Vertex<dyn SinkFactory>> for SinkVertex {
    fn from(v: Vertex<dyn SinkFactory>) -> Self {
        SinkVertex { uid: v.uid, parallelism: v.parallelism, input: v.input, factory: Arc::from(v.factory) }
    }
}

/// A vertex's shape, enough to wire channels.
#[derive(Clone)]
struct Shape {
    uid: Arc<str>,
    parallelism: u32,
    input: Partitioning,
}

/// Channels from every subtask of the upstream vertices to one downstream vertex. Returns, per
/// upstream vertex and subtask, the route to it, and per downstream subtask, its receivers.
fn wire(upstream: &[Shape], down: &Shape, max_parallelism: u32) -> (Vec<Vec<Route>>, Vec<Vec<Receiver<Message>>>) {
    let mut receivers: Vec<Vec<_>> = (0..down.parallelism).map(|_| Vec::new()).collect();
    let capacity = channel::capacity(fan_in(upstream, down));
    let routes = upstream
        .iter()
        .map(|up| {
            (0..up.parallelism as usize)
                .map(|i| {
                    if direct(up, down) {
                        let (tx, rx) = channel::channel(capacity);
                        receivers[i].push(rx);
                        return Route::direct(down.uid.clone(), tx);
                    }
                    let senders = receivers
                        .iter_mut()
                        .map(|r| {
                            let (tx, rx) = channel::channel(capacity);
                            r.push(rx);
                            tx
                        })
                        .collect();
                    match down.input {
                        Partitioning::Forward => Route::round_robin(down.uid.clone(), senders),
                        Partitioning::Hash => Route::hash(down.uid.clone(), senders, max_parallelism),
                    }
                })
                .collect()
        })
        .collect();
    (routes, receivers)
}

/// An edge where subtask i feeds subtask i alone.
fn direct(up: &Shape, down: &Shape) -> bool {
    down.input == Partitioning::Forward && up.parallelism == down.parallelism
}

/// How many input channels each subtask of `down` has.
fn fan_in(upstream: &[Shape], down: &Shape) -> usize {
    upstream.iter().map(|up| if direct(up, down) { 1 } else { up.parallelism as usize }).sum()
}

/// The stages a job runs as: its sources, each operator, then its sinks, unless those are chained
/// into the last operator's threads (then the flag says so). Stage k feeds every vertex of k+1.
fn stages(sources: Vec<Shape>, operators: Vec<Shape>, sinks: Vec<Shape>) -> (Vec<Vec<Shape>>, bool) {
    // As Flink chains forward edges of equal parallelism: a channel hop and a cross-thread wake-up
    // per batch buy nothing there.
    let chain_sinks = operators.last().is_some_and(|last| {
        sinks.iter().all(|s| s.input == Partitioning::Forward && s.parallelism == last.parallelism)
    });
    let mut stages = vec![sources];
    stages.extend(operators.into_iter().map(|op| vec![op]));
    if !chain_sinks {
        stages.push(sinks);
    }
    (stages, chain_sinks)
}

/// The most subtask threads one job may run.
pub const MAX_SUBTASKS: usize = 4096;
/// The most channels between a job's subtasks (each costs about a kilobyte, and a subtask reads
/// all of its inputs): a hash edge needs upstream × downstream subtasks of them.
pub const MAX_CHANNELS: usize = 1 << 17;

/// Refuses a graph one host cannot run, saying why: more subtasks than [`MAX_SUBTASKS`], or more
/// channels than [`MAX_CHANNELS`].
pub fn check_size(graph: &JobGraph) -> Result<(), String> {
    let shape = |uid: &Arc<str>, parallelism, input| Shape { uid: uid.clone(), parallelism, input };
    let sources: Vec<Shape> = graph.sources.iter().map(|v| shape(&v.uid, v.parallelism, v.input)).collect();
    let operators: Vec<Shape> = graph.operators.iter().map(|v| shape(&v.uid, v.parallelism, v.input)).collect();
    let sinks: Vec<Shape> = graph.sinks.iter().map(|v| shape(&v.uid, v.parallelism, v.input)).collect();
    let subtasks: usize = sources.iter().chain(&operators).chain(&sinks).map(|s| s.parallelism as usize).sum();
    if subtasks > MAX_SUBTASKS {
        return Err(format!(
            "the job has {subtasks} subtasks, and one host runs at most {MAX_SUBTASKS} per job: lower its parallelism"
        ));
    }
    let (stages, _) = stages(sources, operators, sinks);
    let mut channels = 0;
    for pair in stages.windows(2) {
        for down in &pair[1] {
            let edge = fan_in(&pair[0], down) * down.parallelism as usize;
            channels += edge;
            if channels > MAX_CHANNELS {
                return Err(format!(
                    "'{}' at parallelism {} reads from {} upstream subtasks: the job needs more than {MAX_CHANNELS} \
                     channels between subtasks, the most one host runs; lower the parallelism of '{}' or of what \
                     feeds it",
                    down.uid,
                    down.parallelism,
                    fan_in(&pair[0], down),
                    down.uid
                ));
            }
        }
    }
    Ok(())
}

/// Runs the job until its sources are exhausted and the sinks have flushed, or until `cancel` is
/// set or a subtask fails. `metrics` fills in as subtasks start, so others can watch the job.
pub fn execute(graph: JobGraph, cancel: Arc<AtomicBool>, metrics: Arc<JobMetrics>) -> Result<(), JobFailure> {
    let JobGraph { max_parallelism, attempt, sources, operators, sinks, checkpointing, savepoints, handover, .. } =
        graph;
    metrics.begin_attempt();
    let sinks: Vec<SinkVertex> = sinks.into_iter().map(SinkVertex::from).collect();
    let (acks, ack_receiver) = crossbeam_channel::unbounded();
    let (uploads, upload_receiver) = crossbeam_channel::unbounded();
    let control = Arc::new(Control {
        cancel,
        stop: Arc::new(AtomicBool::new(false)),
        failure: Mutex::new(None),
        requested: AtomicU64::new(checkpointing.as_ref().map_or(0, |c| c.first_id.saturating_sub(1))),
        exactly_once: checkpointing.as_ref().is_none_or(|c| c.exactly_once),
        checkpointing: checkpointing.is_some(),
        acks,
        uploads,
        targets: Mutex::default(),
        stop_at: AtomicU64::new(0),
        final_checkpoint_done: AtomicBool::new(false),
        handover,
        handing_over: AtomicBool::new(false),
    });
    let coordination = {
        let subtasks = |parallelisms: &mut dyn Iterator<Item = u32>| parallelisms.map(|p| p as usize).sum::<usize>();
        let sources = subtasks(&mut sources.iter().map(|v| v.parallelism));
        let expected = sources
            + subtasks(&mut operators.iter().map(|v| v.parallelism))
            + subtasks(&mut sinks.iter().map(|v| v.parallelism));
        let sink_factories = sinks.iter().map(|v| (v.uid.clone(), v.factory.clone())).collect();
        let c = control.clone();
        let uploader =
            std::thread::spawn(move || failing_on_panic("uploader", &c.clone(), || upload(upload_receiver, &c)));
        let (c, m) = (control.clone(), metrics.clone());
        let savepoints = savepoints.unwrap_or_else(crossbeam_channel::never);
        let coordinator = std::thread::spawn(move || {
            let coordinator = Coordinator {
                next_trigger: Instant::now() + checkpointing.as_ref().map_or(Duration::ZERO, |c| c.interval),
                config: checkpointing.as_ref(),
                control: &c,
                metrics: &m,
                sinks: sink_factories,
                publishing: true,
                expected,
                sources,
                sources_finished: 0,
                pending: BTreeMap::new(),
                last_end: None,
                consecutive_failures: 0,
                final_pending: None,
            };
            failing_on_panic("checkpoint-coordinator", &c, || coordinator.run(ack_receiver, savepoints))
        });
        (uploader, coordinator)
    };

    // Stages: all sources, then each operator, then all sinks. Stage k feeds every vertex of k+1.
    // Sinks after an operator are chained into its threads instead (as Flink chains forward edges
    // of equal parallelism): a channel hop and a cross-thread wake-up per batch buy nothing there.
    let shape = |uid: &Arc<str>, parallelism, input| Shape { uid: uid.clone(), parallelism, input };
    let (stages, chain_sinks) = stages(
        sources.iter().map(|v| shape(&v.uid, v.parallelism, v.input)).collect(),
        operators.iter().map(|v| shape(&v.uid, v.parallelism, v.input)).collect(),
        sinks.iter().map(|v| shape(&v.uid, v.parallelism, v.input)).collect(),
    );

    // routes[stage][vertex][subtask], inputs[stage][vertex][subtask]
    let mut routes: Vec<Vec<Vec<Vec<Route>>>> =
        stages.iter().map(|s| s.iter().map(|v| (0..v.parallelism).map(|_| Vec::new()).collect()).collect()).collect();
    let mut inputs: Vec<Vec<Vec<Vec<Receiver<Message>>>>> = vec![Vec::new()];
    for k in 1..stages.len() {
        let mut stage_inputs = Vec::new();
        for down in &stages[k] {
            let (stage_routes, receivers) = wire(&stages[k - 1], down, max_parallelism);
            for (v, per_subtask) in stage_routes.into_iter().enumerate() {
                for (s, route) in per_subtask.into_iter().enumerate() {
                    routes[k - 1][v][s].push(route);
                }
            }
            stage_inputs.push(receivers);
        }
        inputs.push(stage_inputs);
    }
    let mut routes = routes.into_iter();
    let mut inputs = inputs.into_iter().skip(1);

    let mut runner =
        Runner { control: control.clone(), threads: Vec::new(), metrics: metrics.clone(), max_parallelism, attempt };
    let source_routes = routes.next().unwrap_or_default();
    for (vertex, vertex_routes) in sources.into_iter().zip(source_routes) {
        let factory: Arc<dyn super::SourceFactory> = Arc::from(vertex.factory);
        let rate = factory.rate().map(|r| r / f64::from(vertex.parallelism));
        runner.vertex("source", &vertex.uid, vertex.parallelism, vertex_routes.into_iter().map(|r| (Vec::new(), r)), {
            move |info, _inputs, output, control, counters| {
                let source = factory.create(info)?;
                run_source(source, info, output, rate, control, counters)
            }
        });
    }
    // Chained sinks: each sink's factory and per-subtask counters, shared by the last operator's
    // subtask threads, which open their own sink instances.
    let mut chained_sinks = Vec::new();
    let mut sink_counters = Vec::new();
    let last_operator_uid = operators.last().map(|v| v.uid.clone());
    let mut sink_threads = Vec::new();
    for vertex in sinks {
        if chain_sinks {
            let subtasks: Vec<Arc<Counters>> = (0..vertex.parallelism).map(|_| Arc::default()).collect();
            chained_sinks.push((vertex.factory, vertex.uid.clone(), subtasks.clone()));
            sink_counters.push(VertexCounters {
                kind: "sink",
                uid: vertex.uid,
                parallelism: vertex.parallelism,
                subtasks,
                chained_into: last_operator_uid.clone(),
            });
        } else {
            sink_threads.push(vertex);
        }
    }
    let chained_sinks = Arc::new(chained_sinks);
    let last_operator = operators.len().checked_sub(1);
    for (i, vertex) in operators.into_iter().enumerate() {
        let vertex_inputs = inputs.next().and_then(|mut v| v.pop()).unwrap_or_default();
        let vertex_routes = routes.next().and_then(|mut v| v.pop()).unwrap_or_default();
        let factory: Arc<dyn super::OperatorFactory> = Arc::from(vertex.factory);
        let chained = if Some(i) == last_operator { chained_sinks.clone() } else { Arc::default() };
        let metrics = metrics.clone();
        runner.vertex("operator", &vertex.uid, vertex.parallelism, vertex_inputs.into_iter().zip(vertex_routes), {
            move |info, inputs, output, control, counters| {
                let operator = factory.create(info)?;
                let sinks = chained
                    .iter()
                    .map(|(factory, uid, subtasks)| {
                        let counters = subtasks[info.index as usize].clone();
                        let info = SubtaskInfo { uid: uid.clone(), ..info.clone() };
                        ChainedSink::open(&**factory, info, counters, metrics.clone(), control)
                    })
                    .collect::<Result<Vec<_>, Stop>>()?;
                run_operator(operator, info, inputs, output, sinks, control, counters)
            }
        });
    }
    for vertex in sink_counters {
        runner.metrics.push(vertex);
    }
    let sink_inputs = inputs.next().unwrap_or_default();
    for (vertex, vertex_inputs) in sink_threads.into_iter().zip(sink_inputs) {
        let no_routes = std::iter::repeat_with(Vec::new);
        let (metrics, factory) = (metrics.clone(), vertex.factory);
        runner.vertex("sink", &vertex.uid, vertex.parallelism, vertex_inputs.into_iter().zip(no_routes), {
            move |info, inputs, _output, control, counters| {
                let sink = factory.create(info)?;
                run_sink(sink, info, inputs, control, counters, &metrics)
            }
        });
    }

    let Runner { threads, .. } = runner;
    let mut panicked = None;
    for thread in threads {
        let name = thread.thread().name().unwrap_or_default().to_string();
        if let Err(payload) = thread.join() {
            control.stop.store(true, Ordering::SeqCst);
            panicked.get_or_insert(JobFailure::Panicked { thread: name, message: panic_message(&*payload) });
        }
    }
    let (uploader, coordinator) = coordination;
    let finish = {
        let (control, metrics) = (control.clone(), metrics.clone());
        move || {
            // Pending snapshots are stored (and acknowledged) before the coordinator hears the end.
            let _ = control.uploads.send(None);
            let _ = uploader.join();
            control.ack(Ack::JobEnded);
            let _ = coordinator.join();
            let last_id = control.requested.load(Ordering::SeqCst);
            metrics.checkpoint_stats(|s| s.attempt_ended(last_id));
        }
    };
    let handed_over = control.handing_over.load(Ordering::SeqCst) && control.failure.lock().is_ok_and(|f| f.is_none());
    if handed_over && panicked.is_none() {
        // The next run starts now; the stop's savepoint is stored behind it.
        if let Err(e) = std::thread::Builder::new().name("savepoint-finish".into()).spawn(finish) {
            tracing::warn!("cannot store the stop's savepoint behind the next run: {e}");
        }
        return Ok(());
    }
    finish();
    if let Some(failure) = panicked {
        return Err(failure);
    }
    if let Some(failure) = control.failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(failure);
    }
    if control.cancelled() {
        return Err(JobFailure::Cancelled);
    }
    Ok(())
}

/// What a panic said, from its payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => text.to_string(),
        (_, Some(text)) => text.clone(),
        _ => "no message".to_string(),
    }
}

/// Runs `body` of the job's thread `thread`; a panic in it fails the run with its message
/// instead of leaving the job waiting for that thread forever.
fn failing_on_panic(thread: &str, control: &Control, body: impl FnOnce()) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        control.fail(JobFailure::Panicked { thread: thread.to_string(), message: panic_message(&*payload) });
    }
}

/// Spawns subtask threads and keeps their handles and counters.
struct Runner {
    control: Arc<Control>,
    threads: Vec<std::thread::JoinHandle<()>>,
    metrics: Arc<JobMetrics>,
    max_parallelism: u32,
    attempt: u32,
}

impl Runner {
    /// Spawns one thread per subtask of a vertex, each running `body` with its inputs and output.
    fn vertex<B>(
        &mut self,
        kind: &'static str,
        uid: &Arc<str>,
        parallelism: u32,
        wiring: impl Iterator<Item = (Vec<Receiver<Message>>, Vec<Route>)>,
        body: B,
    ) where
        B: Fn(&SubtaskInfo, Inputs, Output, &Control, &Counters) -> Result<(), Stop> + Send + Sync + 'static,
    {
        let body = Arc::new(body);
        let mut vertex_counters = Vec::new();
        for (index, (receivers, routes)) in wiring.enumerate() {
            let info = SubtaskInfo {
                uid: uid.clone(),
                index: index as u32,
                parallelism,
                max_parallelism: self.max_parallelism,
                attempt: self.attempt,
                interrupt: Interrupt::new(self.control.cancel.clone(), self.control.stop.clone()),
            };
            let counters = Arc::new(Counters::default());
            vertex_counters.push(counters.clone());
            let (control, body) = (self.control.clone(), body.clone());
            let thread_info = info.clone();
            let spawned =
                std::thread::Builder::new().name(format!("{uid}-{index}").replace('\0', "?")).spawn(move || {
                    let inputs = Inputs::new(receivers, control.exactly_once);
                    let result = body(&thread_info, inputs, Output::new(routes), &control, &counters);
                    counters.cpu_ns.store(thread_cpu_time().as_nanos() as u64, Ordering::Relaxed);
                    if let Err(Stop::Failed(cause)) = result {
                        control.fail(TaskError { kind, subtask: thread_info, cause });
                    }
                });
            match spawned {
                Ok(handle) => self.threads.push(handle),
                Err(e) => {
                    self.control.fail(TaskError { kind, subtask: info, cause: format!("cannot start thread: {e}") })
                }
            }
        }
        self.metrics.push(VertexCounters {
            kind,
            uid: uid.clone(),
            parallelism,
            subtasks: vertex_counters,
            chained_into: None,
        });
    }
}

/// Why a subtask loop ended early.
enum Stop {
    /// A peer vanished: another subtask failed or the job was cancelled, and that is the job's
    /// cause, so this subtask stops without one of its own.
    Quiet,
    /// This subtask failed.
    Failed(String),
}

impl From<String> for Stop {
    fn from(cause: String) -> Self {
        Stop::Failed(cause)
    }
}

impl From<ChannelError> for Stop {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Disconnected => Stop::Quiet,
            ChannelError::MissingKey { target } => Stop::Failed(format!(
                "an event without a key reached '{target}', which reads its input by key (input = \"hash\"); \
                 set a key upstream, for example with a key_by operator"
            )),
        }
    }
}

/// A source subtask's side of the barriers: it injects each requested barrier once, at the
/// source's position between two polls.
struct Barriers<'a> {
    info: &'a SubtaskInfo,
    control: &'a Control,
    /// The last barrier injected. Checkpoint ids continue from earlier runs: only barriers
    /// requested from now on are new.
    injected: u64,
}

impl Barriers<'_> {
    /// Injects every barrier requested since the last one, in order (two may be requested
    /// between polls, say a checkpoint and a savepoint; each must reach every sink): everything
    /// sent so far is before them, everything after is after them.
    fn inject(&mut self, output: &mut Output, source: &dyn super::Source) -> Result<(), Stop> {
        let requested = self.control.requested.load(Ordering::SeqCst);
        for id in self.injected + 1..=requested {
            let (uid, subtask) = (self.info.uid.to_string(), self.info.index);
            let position = SourcePosition { uid, subtask, position: source.position() };
            output.barrier(id)?;
            self.control.ack(Ack::Task(id, TaskAck { position: Some(position), ..TaskAck::new(self.info) }));
            self.injected = id;
        }
        Ok(())
    }

    /// Waits, still injecting barriers when asked, until the checkpoint or savepoint that ends
    /// the job has completed (true), or the job is cancelled or, when `stopping`, the stop's
    /// savepoint failed (false).
    fn wait_for_the_end(
        &mut self,
        output: &mut Output,
        source: &dyn super::Source,
        stopping: bool,
    ) -> Result<bool, Stop> {
        output.flush()?;
        while !self.control.final_checkpoint_done.load(Ordering::SeqCst) {
            if self.control.cancelled() || (stopping && self.control.stop_at.load(Ordering::SeqCst) == 0) {
                return Ok(false);
            }
            self.inject(output, source)?;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(true)
    }
}

fn run_source(
    mut source: Box<dyn super::Source>,
    info: &SubtaskInfo,
    mut output: Output,
    rate: Option<f64>,
    control: &Control,
    counters: &Counters,
) -> Result<(), Stop> {
    // A rate-limited source sends small batches (about 50 per second) on a schedule.
    let max = rate.map_or(BATCH_SIZE, |r| ((r / 50.0) as usize).clamp(1, BATCH_SIZE));
    let started = Instant::now();
    let mut sent = 0u64;
    let mut batch = EventBatch::with_capacity(max, max * 64);
    let mut barriers = Barriers { info, control, injected: control.requested.load(Ordering::SeqCst) };
    while !control.cancelled() {
        barriers.inject(&mut output, &*source)?;
        let stop_at = control.stop_at.load(Ordering::SeqCst);
        if stop_at != 0 && barriers.injected >= stop_at {
            // Stop with savepoint: nothing after its barrier. For an upgrade, the next run goes
            // on from here at once; else the job ends once the savepoint is stored, and goes on
            // if it fails.
            if let Some(handover) = control.handover.as_ref().filter(|_| control.handing_over.load(Ordering::SeqCst)) {
                let (uid, subtask) = (info.uid.to_string(), info.index);
                handover.put_position(stop_at, SourcePosition { uid, subtask, position: source.position() });
                return Ok(output.end()?);
            }
            if barriers.wait_for_the_end(&mut output, &*source, true)? {
                return Ok(output.end()?);
            }
            continue;
        }
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                output.flush()?;
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
                continue;
            }
        }
        let more = source.poll(&mut batch, max)?;
        sent += batch.len() as u64;
        counters.events_out.fetch_add(batch.len() as u64, Ordering::Relaxed);
        output.send(std::mem::take(&mut batch))?;
        if !more {
            if control.checkpointing {
                // Exhausted, it still takes part in checkpoints until one taken after every
                // source finished has completed: that one commits the sinks' last output.
                control.ack(Ack::SourceFinished);
                if !barriers.wait_for_the_end(&mut output, &*source, false)? {
                    return Ok(());
                }
            }
            return Ok(output.end()?);
        }
    }
    Ok(())
}

/// Writes a batch to a sink and counts it.
fn write_counted(
    sink: &mut dyn super::Sink,
    counters: &Counters,
    metrics: &JobMetrics,
    batch: &EventBatch,
) -> Result<(), String> {
    if !batch.is_empty() {
        metrics.first_sink_event.get_or_init(super::now_ms);
    }
    counters.events_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
    sink.write(batch)?;
    counters.events_out.fetch_add(batch.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// A sink running in its upstream operator's thread. Its failures are its own: they are reported
/// under the sink's uid, not the operator's.
struct ChainedSink {
    sink: Box<dyn super::Sink>,
    info: SubtaskInfo,
    counters: Arc<Counters>,
    metrics: Arc<JobMetrics>,
}

impl ChainedSink {
    fn open(
        factory: &dyn super::SinkFactory,
        info: SubtaskInfo,
        counters: Arc<Counters>,
        metrics: Arc<JobMetrics>,
        control: &Control,
    ) -> Result<Self, Stop> {
        match factory.create(&info) {
            Ok(sink) => Ok(ChainedSink { sink, info, counters, metrics }),
            Err(cause) => Err(Self::failed(info, cause, control)),
        }
    }

    fn failed(subtask: SubtaskInfo, cause: String, control: &Control) -> Stop {
        control.fail(TaskError { kind: "sink", subtask, cause });
        Stop::Quiet
    }

    fn write(&mut self, batch: &EventBatch, control: &Control) -> Result<(), Stop> {
        write_counted(&mut *self.sink, &self.counters, &self.metrics, batch)
            .map_err(|cause| Self::failed(self.info.clone(), cause, control))
    }

    fn finish(&mut self, control: &Control) -> Result<(), Stop> {
        self.sink.finish().map_err(|cause| Self::failed(self.info.clone(), cause, control))
    }

    fn pre_commit(&mut self, id: u64, alignment: Duration, control: &Control) -> Result<(), Stop> {
        pre_commit(&mut *self.sink, &self.info, id, alignment, control)
            .map_err(|cause| Self::failed(self.info.clone(), cause, control))
    }
}

/// A sink's part of checkpoint `id`: pre-commit, then acknowledge.
fn pre_commit(
    sink: &mut dyn super::Sink,
    info: &SubtaskInfo,
    id: u64,
    alignment: Duration,
    control: &Control,
) -> Result<(), String> {
    let started = Instant::now();
    sink.pre_commit(id)?;
    let stats = SubtaskCheckpoint { alignment, sync: started.elapsed(), ..Default::default() };
    control.ack(Ack::Task(id, TaskAck { stats, ..TaskAck::new(info) }));
    Ok(())
}

fn run_operator(
    mut operator: Box<dyn super::Operator>,
    info: &SubtaskInfo,
    mut inputs: Inputs,
    mut output: Output,
    mut sinks: Vec<ChainedSink>,
    control: &Control,
    counters: &Counters,
) -> Result<(), Stop> {
    let mut out = EventBatch::default();
    let mut block = false;
    loop {
        match inputs.next(block)? {
            Received::Batch(batch) => {
                block = false;
                counters.events_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
                operator.process(&batch, &mut out)?;
                let now = clock_ns();
                let _ = counters.first_batch_ns.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                counters.last_batch_ns.store(now, Ordering::Relaxed);
                counters.events_out.fetch_add(out.len() as u64, Ordering::Relaxed);
                for sink in &mut sinks {
                    sink.write(&out, control)?;
                }
                if output.is_empty() {
                    out.clear();
                } else {
                    output.send(std::mem::take(&mut out))?;
                }
            }
            // Nothing waiting: send what routing held back before blocking for more.
            Received::Idle => {
                output.flush()?;
                block = true;
            }
            Received::Barrier(id) => {
                // The synchronous part: a copy of the state; storing it is the uploader's work.
                // At the stop of a handover nothing follows on this thread: the state is frozen
                // for the uploader instead of copied.
                let alignment = inputs.alignment();
                let started = Instant::now();
                let handing_over =
                    control.handing_over.load(Ordering::SeqCst) && control.stop_at.load(Ordering::SeqCst) == id;
                let snapshot = if handing_over { operator.freeze()? } else { operator.snapshot()? };
                let stats = SubtaskCheckpoint { alignment, sync: started.elapsed(), ..Default::default() };
                let ack = TaskAck { stats, ..TaskAck::new(info) };
                match snapshot {
                    Some(snapshot) => {
                        let _ = control.uploads.send(Some(Upload { id, snapshot, ack }));
                    }
                    None => control.ack(Ack::Task(id, ack)),
                }
                for sink in &mut sinks {
                    sink.pre_commit(id, alignment, control)?;
                }
                output.barrier(id)?;
            }
            Received::Ended => {
                for sink in &mut sinks {
                    sink.finish(control)?;
                }
                output.end()?;
                if let Some(handover) =
                    control.handover.as_ref().filter(|_| control.handing_over.load(Ordering::SeqCst))
                    && let Some(state) = operator.into_state()
                {
                    let key_groups = key_group_range(info.max_parallelism, info.parallelism, info.index);
                    handover.put(&info.uid, info.index, key_groups, state);
                }
                return Ok(());
            }
        }
    }
}

fn run_sink(
    mut sink: Box<dyn super::Sink>,
    info: &SubtaskInfo,
    mut inputs: Inputs,
    control: &Control,
    counters: &Counters,
    metrics: &JobMetrics,
) -> Result<(), Stop> {
    loop {
        match inputs.next(true)? {
            Received::Batch(batch) => write_counted(&mut *sink, counters, metrics, &batch)?,
            Received::Barrier(id) => pre_commit(&mut *sink, info, id, inputs.alignment(), control)?,
            Received::Idle => {}
            Received::Ended => return Ok(sink.finish()?),
        }
    }
}
