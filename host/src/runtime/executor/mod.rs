//! Runs a [`JobGraph`]: one thread per subtask (each owns its operator instance, so a Wasm store
//! never crosses threads), bounded channels between them, and the first failure cancels the job.
//!
//! The executor alone knows threads: it lays out stages and channels ([`wiring`]), spawns one
//! thread per subtask running the runner's loops (`runtime::runner`) with the run's `Control` as
//! their context and channels as their streams, one thread for the checkpoint coordinator and
//! one for its uploader (`runtime::coordinator`), and joins them.
mod wiring;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::runtime::channel::{Downstream, Inputs, Route};
use crate::runtime::control::{Ack, Control};
use crate::runtime::coordinator::{Coordinator, upload};
use crate::runtime::metrics::{Counters, InputCounters, JobMetrics, VertexCounters, thread_cpu_time};
use crate::runtime::runner::{SinkDriver, SourceSettings, Stop, run_operator, run_sink, run_source};
use crate::runtime::{
    Interrupt, JobFailure, JobGraph, Position, RunHandles, SubtaskInfo, TaskError, VertexInput, VertexKind,
};
use wiring::{InputChannel, SinkVertex, Wiring, chained_sinks, wire};
pub use wiring::{MAX_CHANNELS, MAX_SUBTASKS, check_size};

/// Runs the job until its sources are exhausted and the sinks have flushed, or until it is
/// cancelled (through `handles`) or a subtask fails. Its metrics fill in as subtasks start, so
/// others can watch the job.
pub fn execute(graph: JobGraph, handles: &RunHandles) -> Result<(), JobFailure> {
    let JobGraph { max_parallelism, attempt, sources, operators, sinks, checkpointing, positions, .. } = graph;
    let RunHandles { cancel, metrics, savepoints, handover, wakeup, recent, shadows } = handles;
    let (cancel, metrics, savepoints) = (cancel.clone(), metrics.clone(), savepoints.clone());
    let handover = Some(handover.clone());
    metrics.begin_attempt();
    let sinks: Vec<SinkVertex> = sinks.into_iter().map(SinkVertex::from).collect();
    let (acks, ack_receiver) = crossbeam_channel::unbounded();
    let (uploads, upload_receiver) = crossbeam_channel::unbounded();
    let before_run = checkpointing.as_ref().map_or(0, |c| c.first_id.saturating_sub(1));
    let control = Arc::new(Control {
        cancel,
        stop: Arc::new(AtomicBool::new(false)),
        failure: Mutex::new(None),
        requested: AtomicU64::new(before_run),
        before_run,
        exactly_once: checkpointing.as_ref().is_none_or(|c| c.exactly_once),
        acks,
        uploads,
        targets: Mutex::default(),
        lasting: Mutex::default(),
        stop_at: AtomicU64::new(0),
        draining: AtomicBool::new(false),
        final_checkpoint_done: AtomicBool::new(false),
        completed: AtomicU64::new(0),
        handover,
        handing_over: AtomicBool::new(false),
        news: wakeup.clone(),
        recent: recent.clone(),
        shadows: shadows.clone(),
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
        let coordinator = std::thread::spawn(move || {
            let coordinator = Coordinator::new(&c, &m, checkpointing.as_ref(), sink_factories, expected, sources);
            failing_on_panic("checkpoint-coordinator", &c, || coordinator.run(ack_receiver, &savepoints))
        });
        (uploader, coordinator)
    };

    // Channels for every edge; sinks chained into an operator's threads need none.
    let vertices = sources
        .iter()
        .map(|v| (&v.uid, v.parallelism, &v.inputs[..]))
        .chain(operators.iter().map(|v| (&v.uid, v.parallelism, &v.inputs[..])))
        .chain(sinks.iter().map(|v| (&v.uid, v.parallelism, &v.inputs[..])));
    let mut shapes = wiring::shapes(vertices.clone());
    let first_operator = sources.len();
    let first_sink = first_operator + operators.len();
    let chained_into = chained_sinks(&shapes, first_operator..first_sink, first_sink..shapes.len());
    for (shape, chained) in shapes[first_sink..].iter_mut().zip(&chained_into) {
        if chained.is_some() {
            shape.inputs.clear();
        }
    }
    let Wiring { mut routes, mut receivers, edges_blocked } = wire(&shapes, max_parallelism);
    // Each vertex's inputs with the time its edges waited; a chained sink's edge has no channel.
    let mut source_edges = input_counters(vertices.map(|(.., inputs)| inputs), edges_blocked);
    let sink_edges = source_edges.split_off(first_sink);
    let operator_edges = source_edges.split_off(first_operator);
    let sink_receivers = receivers.split_off(first_sink);
    let mut operator_receivers = receivers.split_off(first_operator).into_iter();
    routes.truncate(first_sink);
    let mut operator_routes = routes.split_off(first_operator).into_iter();

    let mut runner =
        Runner { control: control.clone(), threads: Vec::new(), metrics: metrics.clone(), max_parallelism, attempt };
    for ((vertex, vertex_routes), inputs) in sources.into_iter().zip(routes).zip(source_edges) {
        let factory: Arc<dyn crate::runtime::SourceFactory> = Arc::from(vertex.factory);
        let rate = factory.rate().map(|r| r / f64::from(vertex.parallelism));
        let watermarks = vertex.watermarks;
        let recorded: Vec<_> = positions.iter().filter(|p| *p.uid == *vertex.uid).collect();
        // Every subtask resumes from all positions merged, each taking its own part, so that a
        // source may run at another parallelism than they were recorded at.
        let resume: Result<Option<Position>, String> = match recorded.is_empty() {
            true => Ok(None),
            false => {
                let all: Vec<Position> = recorded.iter().map(|p| p.position.clone()).collect();
                factory.merge_positions(&vertex.uid, &all).map(Some)
            }
        };
        runner.vertex(
            VertexKind::Source,
            (&vertex.uid, vertex.parallelism, inputs),
            vertex_routes.into_iter().map(|r| (Vec::new(), r)),
            {
                move |info, _inputs, mut output, control, counters| {
                    let resume = resume.clone()?;
                    let source = factory.create(info, resume.as_ref())?;
                    run_source(source, info, &mut output, SourceSettings { rate, watermarks }, control, counters)
                }
            },
        );
    }
    // Chained sinks, per operator: each sink's factory and per-subtask counters, shared by the
    // operator's subtask threads, which open their own sink instances.
    let mut chained: Vec<Vec<ChainedSink>> = operators.iter().map(|_| Vec::new()).collect();
    let mut sink_counters = Vec::new();
    let mut sink_threads = Vec::new();
    for (((vertex, into), inputs), edges) in sinks.into_iter().zip(chained_into).zip(sink_receivers).zip(sink_edges) {
        match into {
            Some(operator) => {
                let subtasks: Vec<Arc<Counters>> = (0..vertex.parallelism).map(|_| Arc::default()).collect();
                let into_uid = shapes[operator].uid.clone();
                chained[operator - first_operator].push((vertex.factory, vertex.uid.clone(), subtasks.clone()));
                sink_counters.push(VertexCounters {
                    kind: VertexKind::Sink,
                    uid: vertex.uid,
                    parallelism: vertex.parallelism,
                    subtasks,
                    chained_into: Some(into_uid),
                    inputs: edges,
                    versions: None,
                });
            }
            None => sink_threads.push((vertex, inputs, edges)),
        }
    }
    for ((vertex, chained), inputs) in operators.into_iter().zip(chained).zip(operator_edges) {
        let vertex_inputs = operator_receivers.next().unwrap_or_default();
        let vertex_routes = operator_routes.next().unwrap_or_default();
        let factory: Arc<dyn crate::runtime::OperatorFactory> = Arc::from(vertex.factory);
        let versions = factory.versions();
        let uid = vertex.uid.clone();
        let chained = Arc::new(chained);
        let (metrics, watermarks) = (metrics.clone(), vertex.watermarks);
        runner.vertex(
            VertexKind::Operator,
            (&vertex.uid, vertex.parallelism, inputs),
            vertex_inputs.into_iter().zip(vertex_routes),
            {
                move |info, mut inputs, mut output, control, counters| {
                    let operator = factory.create(info)?;
                    let sinks = chained
                        .iter()
                        .map(|(factory, uid, subtasks)| {
                            let counters = subtasks[info.index as usize].clone();
                            let info = SubtaskInfo { uid: uid.clone(), ..info.clone() };
                            SinkDriver::open(&**factory, info, counters, metrics.clone(), control)
                        })
                        .collect::<Result<Vec<_>, Stop>>()?;
                    run_operator(operator, info, &mut inputs, &mut output, sinks, watermarks, control, counters)
                }
            },
        );
        if let Some(versions) = versions {
            runner.metrics.attach_versions(&uid, versions);
        }
    }
    for vertex in sink_counters {
        runner.metrics.push(vertex);
    }
    for (vertex, vertex_inputs, edges) in sink_threads {
        let no_routes = std::iter::repeat_with(Vec::new);
        let (metrics, factory) = (metrics.clone(), vertex.factory);
        let shape = (&vertex.uid, vertex.parallelism, edges);
        runner.vertex(VertexKind::Sink, shape, vertex_inputs.into_iter().zip(no_routes), {
            move |info, mut inputs, _output, control, counters| {
                let sink = SinkDriver::open(&*factory, info.clone(), counters.clone(), metrics.clone(), control)?;
                run_sink(sink, &mut inputs, control)
            }
        });
    }

    let Runner { threads, .. } = runner;
    let mut panicked = None;
    for thread in threads {
        let name = thread.thread().name().unwrap_or_default().to_string();
        if let Err(payload) = thread.join() {
            control.stop.store(true, Ordering::SeqCst);
            control.announce();
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

/// Each vertex's inputs (`inputs`, in the run's order), with the counters of its edges' waits.
fn input_counters<'a>(
    inputs: impl Iterator<Item = &'a [VertexInput]>,
    edges_blocked: Vec<Vec<Arc<AtomicU64>>>,
) -> Vec<Vec<InputCounters>> {
    inputs
        .zip(edges_blocked)
        .map(|(inputs, blocked)| {
            // A chained sink's edge has no channel: nothing ever waits on it.
            let blocked = blocked.into_iter().chain(std::iter::repeat_with(Arc::default));
            inputs
                .iter()
                .zip(blocked)
                .map(|(input, blocked_ns)| InputCounters { input: input.clone(), blocked_ns })
                .collect()
        })
        .collect()
}

/// A sink run in an operator's threads: its factory, uid and per-subtask counters.
type ChainedSink = (Arc<dyn crate::runtime::SinkFactory>, Arc<str>, Vec<Arc<Counters>>);

/// Spawns subtask threads and keeps their handles and counters.
struct Runner {
    control: Arc<Control>,
    threads: Vec<std::thread::JoinHandle<()>>,
    metrics: Arc<JobMetrics>,
    max_parallelism: u32,
    attempt: u32,
}

impl Runner {
    /// Spawns one thread per subtask of a vertex (its uid, parallelism and inputs), each running
    /// `body` with its input channels and output routes.
    fn vertex<B>(
        &mut self,
        kind: VertexKind,
        (uid, parallelism, inputs): (&Arc<str>, u32, Vec<InputCounters>),
        wiring: impl Iterator<Item = (Vec<InputChannel>, Vec<Route>)>,
        body: B,
    ) where
        B: Fn(&SubtaskInfo, Inputs, Downstream, &Control, &Arc<Counters>) -> Result<(), Stop> + Send + Sync + 'static,
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
                    let result = body(
                        &thread_info,
                        inputs,
                        Downstream::new(routes, counters.backpressured_ns.clone()),
                        &control,
                        &counters,
                    );
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
            inputs,
            versions: None,
        });
    }
}
