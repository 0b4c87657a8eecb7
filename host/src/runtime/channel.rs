//! Bounded channels between subtasks: [`Inputs`] merges a subtask's input channels, [`Output`]
//! routes a subtask's batches to the downstream subtasks (forward, round-robin or by key group).
use std::sync::Arc;

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};

use super::CHANNEL_CAPACITY;
use super::batch::EventBatch;
use crate::key_group::{key_group, subtask_for_key_group};

/// What flows through a channel.
pub(crate) enum Message {
    Batch(EventBatch),
    /// Checkpoint barrier n: everything before it belongs to checkpoint n, everything after to n+1.
    Barrier(u64),
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

/// Why a subtask must stop sending or receiving.
#[derive(Debug)]
pub(crate) enum ChannelError {
    /// A peer vanished: another subtask failed and the job is going down. Not a cause of its own.
    Disconnected,
    /// An event without a key reached a `hash` edge.
    MissingKey { target: Arc<str> },
}

/// What [`Inputs::next`] found.
pub(crate) enum Received {
    Batch(EventBatch),
    /// Barrier n has arrived on every live input (aligned).
    Barrier(u64),
    /// Nothing is ready right now (only when not blocking).
    Idle,
    /// Every input has ended.
    Ended,
}

/// The input channels of one subtask; those that have sent `End` are dropped.
///
/// Barriers are aligned here. In exactly-once mode an input that has delivered barrier n is not
/// read again until barrier n has arrived on every live input, so that nothing after the barrier
/// is processed before the snapshot; in at-least-once mode it keeps being read.
pub(crate) struct Inputs {
    live: Vec<Receiver<Message>>,
    /// Per live input: it has delivered the barrier being aligned.
    arrived: Vec<bool>,
    aligning: Option<u64>,
    /// When the first barrier of the alignment under way arrived.
    alignment_started: Option<std::time::Instant>,
    /// How long the last completed alignment took.
    last_alignment: std::time::Duration,
    exactly_once: bool,
    /// Indices of the inputs to select from, rebuilt per call (kept to reuse its allocation).
    readable: Vec<usize>,
}

impl Inputs {
    pub(crate) fn new(receivers: Vec<Receiver<Message>>, exactly_once: bool) -> Self {
        let arrived = vec![false; receivers.len()];
        Inputs {
            live: receivers,
            arrived,
            aligning: None,
            alignment_started: None,
            last_alignment: std::time::Duration::ZERO,
            exactly_once,
            readable: Vec::new(),
        }
    }

    /// How long the last aligned barrier waited from its first input to its last.
    pub(crate) fn alignment(&self) -> std::time::Duration {
        self.last_alignment
    }

    /// Barrier n once every live input has delivered it.
    fn aligned(&mut self) -> Option<u64> {
        let id = self.aligning?;
        if !self.arrived.iter().all(|&a| a) {
            return None;
        }
        self.aligning = None;
        self.last_alignment = self.alignment_started.take().map_or(std::time::Duration::ZERO, |t| t.elapsed());
        self.arrived.iter_mut().for_each(|a| *a = false);
        Some(id)
    }

    /// The next batch or aligned barrier from any input, waiting for one when `block` is set.
    pub(crate) fn next(&mut self, block: bool) -> Result<Received, ChannelError> {
        loop {
            if let Some(id) = self.aligned() {
                return Ok(Received::Barrier(id));
            }
            // Inputs blocked by alignment are left out of the selection.
            let blocked = |i: &usize| self.exactly_once && self.arrived[*i];
            self.readable.clear();
            self.readable.extend((0..self.live.len()).filter(|i| !blocked(i)));
            let readable = &self.readable;
            let (i, message) = match readable.len() {
                0 if self.live.is_empty() => return Ok(Received::Ended),
                0 => return Err(ChannelError::Disconnected),
                1 if block => {
                    let i = readable[0];
                    (i, self.live[i].recv().map_err(|_| ChannelError::Disconnected)?)
                }
                1 => match self.live[readable[0]].try_recv() {
                    Ok(m) => (readable[0], m),
                    Err(TryRecvError::Empty) => return Ok(Received::Idle),
                    Err(TryRecvError::Disconnected) => return Err(ChannelError::Disconnected),
                },
                _ => {
                    let mut select = Select::new();
                    for &i in readable {
                        select.recv(&self.live[i]);
                    }
                    let op = if block {
                        select.select()
                    } else {
                        match select.try_select() {
                            Ok(op) => op,
                            Err(_) => return Ok(Received::Idle),
                        }
                    };
                    let i = readable[op.index()];
                    (i, op.recv(&self.live[i]).map_err(|_| ChannelError::Disconnected)?)
                }
            };
            match message {
                Message::Batch(batch) => return Ok(Received::Batch(batch)),
                Message::Barrier(id) => {
                    if self.aligning.is_none() {
                        self.alignment_started = Some(std::time::Instant::now());
                    }
                    self.aligning = Some(id);
                    self.arrived[i] = true;
                }
                Message::End => {
                    self.live.swap_remove(i);
                    self.arrived.swap_remove(i);
                }
            }
        }
    }
}

enum Routing {
    /// One downstream subtask.
    Direct,
    /// Whole batches, to each downstream subtask in turn.
    RoundRobin { next: usize },
    /// Event by event, to the subtask owning the event key's key group.
    Hash { pending: Vec<EventBatch>, max_parallelism: u32 },
}

/// The channels from one subtask to the subtasks of one downstream vertex.
pub(crate) struct Route {
    target: Arc<str>,
    senders: Vec<Sender<Message>>,
    routing: Routing,
}

impl Route {
    pub(crate) fn direct(target: Arc<str>, sender: Sender<Message>) -> Self {
        Route { target, senders: vec![sender], routing: Routing::Direct }
    }

    pub(crate) fn round_robin(target: Arc<str>, senders: Vec<Sender<Message>>) -> Self {
        Route { target, senders, routing: Routing::RoundRobin { next: 0 } }
    }

    pub(crate) fn hash(target: Arc<str>, senders: Vec<Sender<Message>>, max_parallelism: u32) -> Self {
        let pending = senders.iter().map(|_| EventBatch::default()).collect();
        Route { target, senders, routing: Routing::Hash { pending, max_parallelism } }
    }

    fn send(&mut self, batch: EventBatch) -> Result<(), ChannelError> {
        match &mut self.routing {
            Routing::Direct => send(&self.senders[0], batch),
            Routing::RoundRobin { next } => {
                let i = *next;
                *next = (i + 1) % self.senders.len();
                send(&self.senders[i], batch)
            }
            Routing::Hash { pending, max_parallelism } => {
                let parallelism = self.senders.len() as u32;
                for event in batch.iter() {
                    let key = event.key.ok_or_else(|| ChannelError::MissingKey { target: self.target.clone() })?;
                    let kg = key_group(key, *max_parallelism);
                    let i = subtask_for_key_group(*max_parallelism, parallelism, kg);
                    pending[i].push(event);
                    if pending[i].is_full() {
                        send(&self.senders[i], std::mem::take(&mut pending[i]))?;
                    }
                }
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> Result<(), ChannelError> {
        if let Routing::Hash { pending, .. } = &mut self.routing {
            for (i, batch) in pending.iter_mut().enumerate().filter(|(_, b)| !b.is_empty()) {
                send(&self.senders[i], std::mem::take(batch))?;
            }
        }
        Ok(())
    }

    /// Flushes, then sends `message` to every downstream subtask.
    fn broadcast(&mut self, message: impl Fn() -> Message) -> Result<(), ChannelError> {
        self.flush()?;
        for sender in &self.senders {
            sender.send(message()).map_err(|_| ChannelError::Disconnected)?;
        }
        Ok(())
    }
}

fn send(sender: &Sender<Message>, batch: EventBatch) -> Result<(), ChannelError> {
    sender.send(Message::Batch(batch)).map_err(|_| ChannelError::Disconnected)
}

/// Everything one subtask sends downstream: one route per downstream vertex.
pub(crate) struct Output {
    routes: Vec<Route>,
}

impl Output {
    pub(crate) fn new(routes: Vec<Route>) -> Self {
        Output { routes }
    }

    /// True when nothing is downstream (the last operator, whose sinks are chained into it).
    pub(crate) fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Sends a batch to every downstream vertex.
    pub(crate) fn send(&mut self, batch: EventBatch) -> Result<(), ChannelError> {
        if batch.is_empty() {
            return Ok(());
        }
        let Some((last, rest)) = self.routes.split_last_mut() else {
            return Ok(());
        };
        for route in rest {
            route.send(batch.clone())?;
        }
        last.send(batch)
    }

    /// Sends batches that routing by key has held back to fill them.
    pub(crate) fn flush(&mut self) -> Result<(), ChannelError> {
        self.routes.iter_mut().try_for_each(Route::flush)
    }

    /// Flushes and sends barrier `id` to every downstream subtask.
    pub(crate) fn barrier(&mut self, id: u64) -> Result<(), ChannelError> {
        self.routes.iter_mut().try_for_each(|r| r.broadcast(|| Message::Barrier(id)))
    }

    /// Flushes and tells every downstream subtask that no more events come.
    pub(crate) fn end(&mut self) -> Result<(), ChannelError> {
        self.routes.iter_mut().try_for_each(|r| r.broadcast(|| Message::End))
    }
}
