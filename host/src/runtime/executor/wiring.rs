//! How a run's vertices become stages and channels: which edges are direct, how many inputs each
//! subtask reads, how deep each channel is, and whether one host can run the graph at all.
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::runtime::channel::{self, Message, Route};
use crate::runtime::{OperatorFactory, Partitioning, SinkFactory, SourceFactory, Vertex};

/// A sink vertex whose factory is shared: subtasks open sinks with it, the checkpoint
/// coordinator has it commit.
pub(super) struct SinkVertex {
    pub(super) uid: Arc<str>,
    pub(super) parallelism: u32,
    pub(super) input: Partitioning,
    pub(super) factory: Arc<dyn SinkFactory>,
}

impl From<Vertex<dyn SinkFactory>> for SinkVertex {
    fn from(v: Vertex<dyn SinkFactory>) -> Self {
        SinkVertex { uid: v.uid, parallelism: v.parallelism, input: v.input, factory: Arc::from(v.factory) }
    }
}

/// A vertex's shape, enough to wire channels.
#[derive(Clone)]
pub(super) struct Shape {
    pub(super) uid: Arc<str>,
    pub(super) parallelism: u32,
    pub(super) input: Partitioning,
}

/// Channels from every subtask of the upstream vertices to one downstream vertex. Returns, per
/// upstream vertex and subtask, the route to it, and per downstream subtask, its receivers.
pub(super) fn wire(
    upstream: &[Shape],
    down: &Shape,
    max_parallelism: u32,
) -> (Vec<Vec<Route>>, Vec<Vec<Receiver<Message>>>) {
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
pub(super) fn direct(up: &Shape, down: &Shape) -> bool {
    down.input == Partitioning::Forward && up.parallelism == down.parallelism
}

/// How many input channels each subtask of `down` has.
pub(super) fn fan_in(upstream: &[Shape], down: &Shape) -> usize {
    upstream.iter().map(|up| if direct(up, down) { 1 } else { up.parallelism as usize }).sum()
}

/// The stages a job runs as: its sources, each operator, then its sinks, unless those are chained
/// into the last operator's threads (then the flag says so). Stage k feeds every vertex of k+1.
pub(super) fn stages(sources: Vec<Shape>, operators: Vec<Shape>, sinks: Vec<Shape>) -> (Vec<Vec<Shape>>, bool) {
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
/// channels than [`MAX_CHANNELS`]. Given its vertices' uids and parallelisms (and the operators'
/// inputs; sources and sinks read forward), so that it runs before any sink is opened.
pub fn check_size(
    sources: &[Vertex<dyn SourceFactory>],
    operators: &[Vertex<dyn OperatorFactory>],
    sinks: impl Iterator<Item = (Arc<str>, u32)>,
) -> Result<(), String> {
    let shape = |uid: &Arc<str>, parallelism, input| Shape { uid: uid.clone(), parallelism, input };
    let sources: Vec<Shape> = sources.iter().map(|v| shape(&v.uid, v.parallelism, v.input)).collect();
    let operators: Vec<Shape> = operators.iter().map(|v| shape(&v.uid, v.parallelism, v.input)).collect();
    let sinks: Vec<Shape> = sinks.map(|(uid, parallelism)| shape(&uid, parallelism, Partitioning::Forward)).collect();
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
