//! How a run's vertices become channels: which edges are direct, which sinks run chained into an
//! operator, how many inputs each subtask reads, how deep each channel is, and whether one host
//! can run the graph at all.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crossbeam_channel::Receiver;

use crate::runtime::channel::{self, Message, Route};
use crate::runtime::{Partitioning, SinkFactory, Vertex, VertexInput};

/// A sink vertex whose factory is shared: subtasks open sinks with it, the checkpoint
/// coordinator has it commit.
pub(super) struct SinkVertex {
    pub(super) uid: Arc<str>,
    pub(super) parallelism: u32,
    pub(super) inputs: Vec<VertexInput>,
    pub(super) factory: Arc<dyn SinkFactory>,
}

impl From<Vertex<dyn SinkFactory>> for SinkVertex {
    fn from(v: Vertex<dyn SinkFactory>) -> Self {
        SinkVertex { uid: v.uid, parallelism: v.parallelism, inputs: v.inputs, factory: Arc::from(v.factory) }
    }
}

/// A vertex's shape, enough to wire channels: its inputs are indices of the run's vertices.
#[derive(Clone)]
pub(super) struct Shape {
    pub(super) uid: Arc<str>,
    pub(super) parallelism: u32,
    /// Per input: the vertex read, the output of it read (0 the main one, k its side output k),
    /// and the partitioning.
    pub(super) inputs: Vec<(usize, u8, Partitioning)>,
}

/// The shapes of a run's vertices (sources, operators, sinks, in this order), with each input
/// resolved to the index of the vertex it reads.
pub(super) fn shapes<'a>(vertices: impl Iterator<Item = (&'a Arc<str>, u32, &'a [VertexInput])> + Clone) -> Vec<Shape> {
    let index: HashMap<&str, usize> = vertices.clone().enumerate().map(|(i, (uid, ..))| (&**uid, i)).collect();
    vertices
        .map(|(uid, parallelism, inputs)| Shape {
            uid: uid.clone(),
            parallelism,
            // The job checked every input names a vertex.
            inputs: inputs.iter().filter_map(|i| Some((*index.get(&*i.from)?, i.output(), i.partitioning))).collect(),
        })
        .collect()
}

/// One input channel of a subtask, with the index of the vertex input it belongs to.
pub(super) type InputChannel = (usize, Receiver<Message>);

/// The channels of a run, per vertex and subtask: its routes (one per vertex it feeds, in the
/// order of `shapes`) and the receivers of its input channels, each with the index of the input
/// it belongs to; and per vertex, the time each of its input edges waited for room (in
/// nanoseconds, over the subtasks sending on it).
pub(super) struct Wiring {
    pub(super) routes: Vec<Vec<Vec<Route>>>,
    pub(super) receivers: Vec<Vec<Vec<InputChannel>>>,
    pub(super) edges_blocked: Vec<Vec<Arc<AtomicU64>>>,
}

/// Channels for every edge of `shapes`, from every subtask of the vertex read to the subtasks of
/// the vertex reading it as its partitioning says.
pub(super) fn wire(shapes: &[Shape], max_parallelism: u32) -> Wiring {
    fn per_subtask<T>(shapes: &[Shape]) -> Vec<Vec<Vec<T>>> {
        shapes.iter().map(|s| (0..s.parallelism).map(|_| Vec::new()).collect()).collect()
    }
    let mut routes: Vec<Vec<Vec<Route>>> = per_subtask(shapes);
    let mut receivers: Vec<Vec<Vec<InputChannel>>> = per_subtask(shapes);
    let mut edges_blocked = Vec::with_capacity(shapes.len());
    for (d, down) in shapes.iter().enumerate() {
        let capacity = channel::capacity(fan_in(shapes, down));
        let blocked: Vec<Arc<AtomicU64>> = down.inputs.iter().map(|_| Arc::default()).collect();
        for (input, (&(u, output, partitioning), edge)) in down.inputs.iter().zip(&blocked).enumerate() {
            for i in 0..shapes[u].parallelism as usize {
                let edge = edge.clone();
                let route = if direct(&shapes[u], down, partitioning) {
                    let (tx, rx) = channel::channel(capacity);
                    receivers[d][i].push((input, rx));
                    Route::direct(down.uid.clone(), tx, edge)
                } else {
                    let senders = receivers[d]
                        .iter_mut()
                        .map(|r| {
                            let (tx, rx) = channel::channel(capacity);
                            r.push((input, rx));
                            tx
                        })
                        .collect();
                    let target = down.uid.clone();
                    match partitioning {
                        Partitioning::Forward | Partitioning::Rebalance => Route::round_robin(target, senders, edge),
                        Partitioning::Hash => Route::hash(target, senders, max_parallelism, edge),
                        Partitioning::Broadcast => Route::to_all(target, senders, edge),
                    }
                };
                routes[u][i].push(route.of_output(output));
            }
        }
        edges_blocked.push(blocked);
    }
    Wiring { routes, receivers, edges_blocked }
}

/// An edge where subtask i feeds subtask i alone.
pub(super) fn direct(up: &Shape, down: &Shape, partitioning: Partitioning) -> bool {
    partitioning == Partitioning::Forward && up.parallelism == down.parallelism
}

/// How many input channels each subtask of `down` has.
pub(super) fn fan_in(shapes: &[Shape], down: &Shape) -> usize {
    down.inputs
        .iter()
        .map(
            |&(u, _, partitioning)| {
                if direct(&shapes[u], down, partitioning) { 1 } else { shapes[u].parallelism as usize }
            },
        )
        .sum()
}

/// The operator each sink is chained into, if any: a sink reading one operator's main output
/// alone, forward at its parallelism, runs in that operator's threads (as Flink chains forward edges of equal
/// parallelism: a channel hop and a cross-thread wake-up per batch buy nothing there).
pub(super) fn chained_sinks(
    shapes: &[Shape],
    operators: std::ops::Range<usize>,
    sinks: std::ops::Range<usize>,
) -> Vec<Option<usize>> {
    shapes[sinks]
        .iter()
        .map(|sink| match sink.inputs[..] {
            [(u, 0, partitioning)] if operators.contains(&u) && direct(&shapes[u], sink, partitioning) => Some(u),
            _ => None,
        })
        .collect()
}

/// The most subtask threads one job may run.
pub const MAX_SUBTASKS: usize = 4096;
/// The most channels between a job's subtasks (each costs about a kilobyte, and a subtask reads
/// all of its inputs): a hash edge needs upstream × downstream subtasks of them.
pub const MAX_CHANNELS: usize = 1 << 17;

/// Refuses a graph one host cannot run, saying why: more subtasks than [`MAX_SUBTASKS`], or more
/// channels than [`MAX_CHANNELS`]. Given its vertices' uids, parallelisms and inputs, so that it
/// runs before any sink is opened.
pub fn check_size<'a>(
    vertices: impl Iterator<Item = (&'a Arc<str>, u32, &'a [VertexInput])> + Clone,
) -> Result<(), String> {
    let shapes = shapes(vertices);
    let subtasks: usize = shapes.iter().map(|s| s.parallelism as usize).sum();
    if subtasks > MAX_SUBTASKS {
        return Err(format!(
            "the job has {subtasks} subtasks, and one host runs at most {MAX_SUBTASKS} per job: lower its parallelism"
        ));
    }
    let mut channels = 0;
    for down in &shapes {
        let fan_in = fan_in(&shapes, down);
        channels += fan_in * down.parallelism as usize;
        if channels > MAX_CHANNELS {
            return Err(format!(
                "'{}' at parallelism {} reads from {fan_in} upstream subtasks: the job needs more than \
                 {MAX_CHANNELS} channels between subtasks, the most one host runs; lower the parallelism of '{}' or \
                 of what feeds it",
                down.uid, down.parallelism, down.uid
            ));
        }
    }
    Ok(())
}
