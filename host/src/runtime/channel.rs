//! Bounded channels between subtasks, weir's implementation of the runner's streams: [`Inputs`]
//! merges a subtask's input channels, [`Downstream`] routes a subtask's batches to the downstream
//! subtasks (forward, round-robin, by key group or to all).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, SendTimeoutError, Sender, TryRecvError, TrySendError};

use super::CHANNEL_CAPACITY;
use super::alignment::BarrierAligner;
use super::batch::EventBatch;
use super::runner::{Input, Output, Received, StreamError};
use super::watermarks::{EventTime, WatermarkValve};
use crate::key_group::{key_group, subtask_for_key_group};

/// What flows through a channel.
pub(crate) enum Message {
    /// Shared: a stream read by several vertices sends each the same batch, not a copy.
    Batch(Arc<EventBatch>),
    /// Checkpoint barrier n: everything before it belongs to checkpoint n, everything after to n+1.
    Barrier(u64),
    /// The sender's event time advanced, or it went idle.
    Time(EventTime),
    /// The sender has no more events.
    End,
}

/// A channel holding up to `capacity` messages.
pub(crate) fn channel(capacity: usize) -> (Sender<Message>, Receiver<Message>) {
    crossbeam_channel::bounded(capacity)
}

/// The capacity of each input channel of a subtask with `fan_in` of them: a subtask buffers about
/// two [`CHANNEL_CAPACITY`]s of batches over all its inputs, and at least two per input, so that
/// an edge's memory grows with its channels, not with channels times a fixed depth.
pub(crate) fn capacity(fan_in: usize) -> usize {
    (2 * CHANNEL_CAPACITY / fan_in.max(1)).clamp(2, CHANNEL_CAPACITY)
}

/// The input channels of one subtask; those that have sent `End` are dropped. Barriers are
/// aligned by its [`BarrierAligner`], watermarks combined by its [`WatermarkValve`] (an input
/// blocked by alignment is not read, so its watermarks stay behind its barrier).
pub(crate) struct Inputs {
    live: Vec<Receiver<Message>>,
    /// The vertex input each live channel belongs to (its index in the vertex's inputs).
    input_of: Vec<usize>,
    aligner: BarrierAligner,
    valve: WatermarkValve,
    /// Indices of the inputs to select from, rebuilt per call (kept to reuse its allocation).
    readable: Vec<usize>,
}

impl Inputs {
    /// `receivers`: each input channel with the index of the vertex input it belongs to.
    pub(crate) fn new(receivers: Vec<(usize, Receiver<Message>)>, exactly_once: bool) -> Self {
        let aligner = BarrierAligner::new(receivers.len(), exactly_once);
        let valve = WatermarkValve::new(receivers.len());
        let (input_of, live) = receivers.into_iter().unzip();
        Inputs { live, input_of, aligner, valve, readable: Vec::new() }
    }

    /// The next batch, aligned barrier or change of event time from any input, waiting for one
    /// as `wait` says; `None` when nothing is ready in time.
    fn next(&mut self, wait: Wait) -> Result<Option<Received>, StreamError> {
        loop {
            // What the last message made the valve pass on comes before what later ones align.
            if let Some(time) = self.valve.output() {
                return Ok(Some(Received::Time(time)));
            }
            if let Some(id) = self.aligner.aligned() {
                return Ok(Some(Received::Barrier(id)));
            }
            // Inputs blocked by alignment are left out of the selection.
            self.readable.clear();
            self.readable.extend((0..self.live.len()).filter(|&i| !self.aligner.is_blocked(i)));
            let readable = &self.readable;
            let (i, message) = match readable.len() {
                0 if self.live.is_empty() => return Ok(Some(Received::Ended)),
                0 => return Err(StreamError::Disconnected),
                1 => {
                    let i = readable[0];
                    let received = match wait {
                        Wait::Forever => self.live[i].recv().map_err(|_| StreamError::Disconnected)?,
                        Wait::No => match self.live[i].try_recv() {
                            Ok(m) => m,
                            Err(TryRecvError::Empty) => return Ok(None),
                            Err(TryRecvError::Disconnected) => return Err(StreamError::Disconnected),
                        },
                        Wait::Until(deadline) => match self.live[i].recv_deadline(deadline) {
                            Ok(m) => m,
                            Err(RecvTimeoutError::Timeout) => return Ok(None),
                            Err(RecvTimeoutError::Disconnected) => return Err(StreamError::Disconnected),
                        },
                    };
                    (i, received)
                }
                _ => {
                    let mut select = Select::new();
                    for &i in readable {
                        select.recv(&self.live[i]);
                    }
                    let op = match wait {
                        Wait::Forever => select.select(),
                        Wait::No => match select.try_select() {
                            Ok(op) => op,
                            Err(_) => return Ok(None),
                        },
                        Wait::Until(deadline) => match select.select_deadline(deadline) {
                            Ok(op) => op,
                            Err(_) => return Ok(None),
                        },
                    };
                    let i = readable[op.index()];
                    (i, op.recv(&self.live[i]).map_err(|_| StreamError::Disconnected)?)
                }
            };
            match message {
                Message::Batch(batch) => {
                    self.valve.active(i);
                    return Ok(Some(Received::Batch(batch, self.input_of[i])));
                }
                Message::Barrier(id) => self.aligner.arrived(i, id),
                Message::Time(EventTime::Watermark(watermark)) => self.valve.watermark(i, watermark),
                Message::Time(EventTime::Idle) => self.valve.idle(i),
                Message::End => {
                    self.live.swap_remove(i);
                    self.input_of.swap_remove(i);
                    self.aligner.ended(i);
                    self.valve.ended(i);
                }
            }
        }
    }
}

/// How long [`Inputs::next`] waits for a message.
#[derive(Clone, Copy)]
enum Wait {
    No,
    Forever,
    Until(std::time::Instant),
}

impl Input for Inputs {
    fn recv(&mut self) -> Result<Received, StreamError> {
        loop {
            if let Some(received) = self.next(Wait::Forever)? {
                return Ok(received);
            }
        }
    }

    fn try_recv(&mut self) -> Result<Option<Received>, StreamError> {
        self.next(Wait::No)
    }

    fn recv_deadline(&mut self, deadline: std::time::Instant) -> Result<Option<Received>, StreamError> {
        self.next(Wait::Until(deadline))
    }

    fn alignment(&self) -> std::time::Duration {
        self.aligner.last_alignment()
    }
}

enum Routing {
    /// One downstream subtask.
    Direct,
    /// Whole batches, to each downstream subtask in turn.
    RoundRobin { next: usize },
    /// Event by event, to the subtask owning the event key's key group.
    Hash { pending: Vec<EventBatch>, max_parallelism: u32 },
    /// Every batch to every downstream subtask.
    Broadcast,
}

/// The channels from one subtask to the subtasks of one downstream vertex: one edge of the job's
/// graph, whose time waiting for room it counts (with every other subtask sending on it).
pub(crate) struct Route {
    target: Arc<str>,
    /// The output of the sending operator it carries: 0 its main output, k its side output k.
    output: u8,
    senders: Vec<Sender<Message>>,
    routing: Routing,
    /// Nanoseconds the edge's senders waited for room in it.
    edge_blocked: Arc<AtomicU64>,
}

impl Route {
    pub(crate) fn direct(target: Arc<str>, sender: Sender<Message>, edge_blocked: Arc<AtomicU64>) -> Self {
        Route { target, output: 0, senders: vec![sender], routing: Routing::Direct, edge_blocked }
    }

    pub(crate) fn round_robin(target: Arc<str>, senders: Vec<Sender<Message>>, edge_blocked: Arc<AtomicU64>) -> Self {
        Route { target, output: 0, senders, routing: Routing::RoundRobin { next: 0 }, edge_blocked }
    }

    pub(crate) fn to_all(target: Arc<str>, senders: Vec<Sender<Message>>, edge_blocked: Arc<AtomicU64>) -> Self {
        Route { target, output: 0, senders, routing: Routing::Broadcast, edge_blocked }
    }

    pub(crate) fn hash(
        target: Arc<str>,
        senders: Vec<Sender<Message>>,
        max_parallelism: u32,
        edge_blocked: Arc<AtomicU64>,
    ) -> Self {
        let pending = senders.iter().map(|_| EventBatch::default()).collect();
        Route { target, output: 0, senders, routing: Routing::Hash { pending, max_parallelism }, edge_blocked }
    }

    /// The same route, carrying the sender's output `output` (see [`Route::output`]).
    pub(crate) fn of_output(self, output: u8) -> Self {
        Route { output, ..self }
    }

    fn send(&mut self, batch: Arc<EventBatch>, subtask_blocked: &AtomicU64) -> Result<(), StreamError> {
        let blocked = [subtask_blocked, &*self.edge_blocked];
        match &mut self.routing {
            Routing::Direct => send(&self.senders[0], batch, blocked),
            Routing::RoundRobin { next } => {
                let i = *next;
                *next = (i + 1) % self.senders.len();
                send(&self.senders[i], batch, blocked)
            }
            // The batch is shared: each subtask gets the same one.
            Routing::Broadcast => self.senders.iter().try_for_each(|sender| send(sender, batch.clone(), blocked)),
            // One downstream subtask owns every key group: the batch goes whole, as the source
            // made it, instead of being copied event by event into a batch of its own.
            Routing::Hash { .. } if self.senders.len() == 1 => {
                if !batch.iter().all(|e| e.key.is_some()) {
                    return Err(StreamError::MissingKey { target: self.target.clone() });
                }
                send(&self.senders[0], batch, blocked)
            }
            Routing::Hash { pending, max_parallelism } => {
                let parallelism = self.senders.len() as u32;
                for event in batch.iter() {
                    let key = event.key.ok_or_else(|| StreamError::MissingKey { target: self.target.clone() })?;
                    let kg = key_group(key, *max_parallelism);
                    let i = subtask_for_key_group(*max_parallelism, parallelism, kg);
                    pending[i].push(event);
                    if pending[i].is_full() {
                        send(&self.senders[i], Arc::new(pending[i].take_sized()), blocked)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn flush(&mut self, subtask_blocked: &AtomicU64) -> Result<(), StreamError> {
        if let Routing::Hash { pending, .. } = &mut self.routing {
            let blocked = [subtask_blocked, &*self.edge_blocked];
            for (i, batch) in pending.iter_mut().enumerate().filter(|(_, b)| !b.is_empty()) {
                send(&self.senders[i], Arc::new(std::mem::take(batch)), blocked)?;
            }
        }
        Ok(())
    }

    /// Flushes, then sends `message` to every downstream subtask.
    fn broadcast(&mut self, message: impl Fn() -> Message, subtask_blocked: &AtomicU64) -> Result<(), StreamError> {
        self.flush(subtask_blocked)?;
        for sender in &self.senders {
            send_message(sender, message(), [subtask_blocked, &*self.edge_blocked])?;
        }
        Ok(())
    }
}

/// Sends `batch` (see [`send_message`]).
fn send(sender: &Sender<Message>, batch: Arc<EventBatch>, blocked: [&AtomicU64; 2]) -> Result<(), StreamError> {
    send_message(sender, Message::Batch(batch), blocked)
}

/// How often a sender waiting for room counts the time it waited: the backpressure shown stays
/// current while a slow reader holds it up.
const COUNT_WAITS_EVERY: Duration = Duration::from_millis(50);

/// Sends `message`, adding the nanoseconds it waited for room downstream to both of `blocked`
/// (the subtask's backpressure and the edge's), as it waits. It tries first: while the channel
/// has room, no clock is read.
fn send_message(sender: &Sender<Message>, message: Message, blocked: [&AtomicU64; 2]) -> Result<(), StreamError> {
    let mut message = match sender.try_send(message) {
        Ok(()) => return Ok(()),
        Err(TrySendError::Disconnected(_)) => return Err(StreamError::Disconnected),
        Err(TrySendError::Full(message)) => message,
    };
    loop {
        let waiting = Instant::now();
        let sent = sender.send_timeout(message, COUNT_WAITS_EVERY);
        let waited = waiting.elapsed().as_nanos() as u64;
        blocked.iter().for_each(|b| {
            b.fetch_add(waited, Ordering::Relaxed);
        });
        match sent {
            Ok(()) => return Ok(()),
            Err(SendTimeoutError::Timeout(back)) => message = back,
            Err(SendTimeoutError::Disconnected(_)) => return Err(StreamError::Disconnected),
        }
    }
}

/// Everything one subtask sends downstream: one route per downstream vertex.
pub(crate) struct Downstream {
    routes: Vec<Route>,
    /// Nanoseconds spent waiting for room downstream (the subtask's counter).
    blocked: Arc<AtomicU64>,
}

impl Downstream {
    pub(crate) fn new(routes: Vec<Route>, blocked: Arc<AtomicU64>) -> Self {
        Downstream { routes, blocked }
    }
}

impl Output for Downstream {
    fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    fn send(&mut self, batch: EventBatch) -> Result<(), StreamError> {
        self.send_side(0, batch)
    }

    fn send_side(&mut self, output: u8, batch: EventBatch) -> Result<(), StreamError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Every vertex reading the stream gets the same batch.
        let batch = Arc::new(batch);
        for route in self.routes.iter_mut().filter(|r| r.output == output) {
            route.send(batch.clone(), &self.blocked)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.routes.iter_mut().try_for_each(|r| r.flush(&self.blocked))
    }

    fn barrier(&mut self, id: u64) -> Result<(), StreamError> {
        self.routes.iter_mut().try_for_each(|r| r.broadcast(|| Message::Barrier(id), &self.blocked))
    }

    fn time(&mut self, time: EventTime) -> Result<(), StreamError> {
        self.routes.iter_mut().try_for_each(|r| r.broadcast(|| Message::Time(time), &self.blocked))
    }

    fn end(&mut self) -> Result<(), StreamError> {
        self.routes.iter_mut().try_for_each(|r| r.broadcast(|| Message::End, &self.blocked))
    }
}
