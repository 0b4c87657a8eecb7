//! `weir worker`: the guest boundary served over a Unix socket to one subtask of another engine
//! (the Flink runner's Wasm operator, `flink/runner/`), which owns the keyed state, the timers and
//! the batching. The worker opens the module in the same sandbox as the embedded runtime (call
//! deadline, memory limit, instance renewal, no ambient capabilities, the compiled-module cache)
//! and passes frames through the same [`GuestInstance`]: the input frame (events and their keys'
//! value state, built by the subtask) in, the output frame (emits, value writes, timer operations,
//! applied by the subtask) out.
//!
//! Messages, both ways: a `u8` tag, a `u32` little-endian length, that many bytes.
//! ```text
//! subtask → worker   1 open     JSON: module, config, uid, index, parallelism, max-parallelism,
//!                               attempt, call-deadline-ms, memory-limit
//!                    2 batch    an input frame (docs/batch-frames.md)
//!                    3 timers   a timer frame
//!                    4 state-reply  (see [`remote`])
//!                    5 migrate  u32 state, u32 from-version, u32 n, n × bytes: items of a state
//!                               saved under an older schema version (an upgrade on Flink)
//!                    6 broadcast  an input frame of events of broadcast inputs, the only ones
//!                               that may write broadcast state
//!                    7 save-broadcast    (empty): its broadcast state
//!                    8 load-broadcast    JSON as `save-broadcast` answers (a checkpoint's, a weir
//!                               savepoint's, the replaced module's), migrated where it was saved
//!                               under another schema version; answered with an empty `output`
//! worker → subtask   1 opened   JSON: the module's contract version and description
//!                    2 output   an output frame; to `migrate`: u32 n, n × bytes, the items rewritten;
//!                               to `save-broadcast`: JSON, as checkpoints record broadcast state
//!                               (`null` when the module declares none)
//!                    3 state    during a call: a map or list state request (see [`remote`])
//!                    9 error    text: why the call failed; the subtask fails its task
//! ```
//! The subtask listens and the worker connects, so a worker that cannot start is a timeout the
//! subtask reports, not a hang. The worker ends when the socket closes: its subtask is gone.
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

mod remote;

use super::engine::{OperatorModule, WasmEngine};
use super::host::KeyedState;
use super::instance::{self, GuestCall, GuestInstance};
use super::operator::SandboxLimits;
use crate::runtime::{Interrupt, SubtaskInfo};
use crate::state::StateDescriptor;
use crate::state::broadcast::{BroadcastState, SavedBroadcast};

/// Message tags (see the module's documentation).
mod tag {
    pub(super) const OPEN: u8 = 1;
    pub(super) const BATCH: u8 = 2;
    pub(super) const TIMERS: u8 = 3;
    pub(super) const STATE_REPLY: u8 = 4;
    pub(super) const MIGRATE: u8 = 5;
    pub(super) const BROADCAST: u8 = 6;
    pub(super) const SAVE_BROADCAST: u8 = 7;
    pub(super) const LOAD_BROADCAST: u8 = 8;
    pub(super) const OPENED: u8 = 1;
    pub(super) const OUTPUT: u8 = 2;
    pub(super) const STATE: u8 = 3;
    pub(super) const ERROR: u8 = 9;
}

/// The connection to the subtask: the serving loop's, and during a guest call its state
/// requests' (see [`remote`]).
struct Channel {
    input: BufReader<UnixStream>,
    output: BufWriter<UnixStream>,
}

impl Channel {
    /// Reads one message into `body`; its tag, or `None` when the peer closed the connection.
    fn receive(&mut self, body: &mut Vec<u8>) -> Result<Option<u8>, String> {
        let mut header = [0u8; 5];
        match self.input.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(format!("cannot read from the subtask: {e}")),
        }
        let length = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if length > MAX_MESSAGE {
            return Err(format!("the subtask sent a message of {length} bytes, more than the {MAX_MESSAGE} allowed"));
        }
        body.resize(length, 0);
        self.input.read_exact(body).map_err(|e| format!("cannot read from the subtask: {e}"))?;
        Ok(Some(header[0]))
    }

    fn send(&mut self, kind: u8, body: &[u8]) -> std::io::Result<()> {
        self.output.write_all(&[kind])?;
        self.output.write_all(&(body.len() as u32).to_le_bytes())?;
        self.output.write_all(body)?;
        self.output.flush()
    }
}

/// The most bytes one message may hold: a frame is bounded by the subtask's batch bounds, far
/// below this; more is a broken peer, not a batch.
const MAX_MESSAGE: usize = 256 << 20;

/// What `open` says: the module and the subtask it serves.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Open {
    module: String,
    /// The operator's configuration, a JSON object as text.
    config: String,
    uid: String,
    index: u32,
    parallelism: u32,
    max_parallelism: u32,
    attempt: u32,
    call_deadline_ms: u64,
    memory_limit: usize,
}

/// Serves the subtask listening at `socket` until it closes the connection.
pub fn serve(socket: &Path, cache_dir: Option<std::path::PathBuf>) -> Result<(), String> {
    let stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to the subtask's socket {}: {e}", socket.display()))?;
    let input = BufReader::with_capacity(1 << 16, stream.try_clone().map_err(|e| e.to_string())?);
    let channel = Arc::new(Mutex::new(Channel { input, output: BufWriter::with_capacity(1 << 16, stream) }));
    let engine = WasmEngine::new(cache_dir)?;
    let mut served: Option<Served> = None;
    let mut message = Vec::new();
    loop {
        let received = lock(&channel)?.receive(&mut message)?;
        let Some(kind) = received else { return Ok(()) };
        let reply = match (kind, served.as_mut()) {
            (tag::OPEN, _) => open(&engine, &message, &channel).map(|(opened, instance)| {
                served = Some(instance);
                (tag::OPENED, opened)
            }),
            (tag::BATCH, Some(served)) => served.call(GuestCall::ProcessBatch, &message, false),
            (tag::BROADCAST, Some(served)) => served.call(GuestCall::ProcessBatch, &message, true),
            (tag::TIMERS, Some(served)) => served.call(GuestCall::OnTimers, &message, false),
            (tag::MIGRATE, Some(served)) => migrate(&mut served.guest, &message),
            (tag::SAVE_BROADCAST, Some(served)) => Ok((tag::OUTPUT, served.save_broadcast())),
            (tag::LOAD_BROADCAST, Some(served)) => served.load_broadcast(&message).map(|()| (tag::OUTPUT, Vec::new())),
            (tag::OPEN..=tag::LOAD_BROADCAST, None) => {
                Err("a message came before `open` (a bug of the subtask)".to_string())
            }
            (other, _) => Err(format!("unknown message tag {other} (a bug of the subtask)")),
        };
        let (kind, body) = reply.unwrap_or_else(|e| (tag::ERROR, e.into_bytes()));
        lock(&channel)?.send(kind, &body).map_err(|e| format!("cannot answer the subtask: {e}"))?;
    }
}

fn lock(channel: &Mutex<Channel>) -> Result<std::sync::MutexGuard<'_, Channel>, String> {
    channel.lock().map_err(|_| "the subtask's connection is poisoned".to_string())
}

/// The opened module a worker serves.
struct Served {
    guest: GuestInstance,
    /// Whether its frames' header has time (contract 0.3.0 and later).
    timed: bool,
    /// Its declared states.
    states: Vec<StateDescriptor>,
}

impl Served {
    /// One guest call with `frame`, of events of broadcast inputs if `broadcast`.
    fn call(&mut self, call: GuestCall, frame: &[u8], broadcast: bool) -> Result<(u8, Vec<u8>), String> {
        let guest = &mut self.guest;
        load_key_table(guest.keyed(), frame, self.timed)
            .map_err(|_| "a truncated frame (a bug of the subtask)".to_string())?;
        guest.keyed().broadcast_writable = broadcast;
        let output = guest.call(call, frame);
        guest.keyed().broadcast_writable = false;
        let output = output?;
        guest.renew_if_grown()?;
        Ok((tag::OUTPUT, output))
    }

    fn save_broadcast(&mut self) -> Vec<u8> {
        let saved = self.guest.keyed().broadcast.save(&self.states);
        serde_json::to_vec(&saved).unwrap_or_default()
    }

    fn load_broadcast(&mut self, message: &[u8]) -> Result<(), String> {
        let saved: Option<SavedBroadcast> =
            serde_json::from_slice(message).map_err(|e| format!("a malformed `load-broadcast`: {e}"))?;
        let guest = &mut self.guest;
        let broadcast = BroadcastState::restore_migrated(&self.states, saved.as_ref(), |migration, items| {
            guest.migrate(migration.state, migration.from_version, items)
        })?;
        guest.keyed().broadcast = broadcast;
        Ok(())
    }
}

/// Loads and opens the module; its description for the subtask.
fn open(engine: &WasmEngine, message: &[u8], channel: &Arc<Mutex<Channel>>) -> Result<(Vec<u8>, Served), String> {
    let open: Open = serde_json::from_slice(message).map_err(|e| format!("a malformed `open`: {e}"))?;
    let module: Arc<OperatorModule> = Arc::new(engine.load_file(Path::new(&open.module)).map_err(|e| e.to_string())?);
    let limits = SandboxLimits {
        call_deadline: Duration::from_millis(open.call_deadline_ms.max(1)),
        memory_limit: open.memory_limit,
        ..SandboxLimits::default()
    };
    let info = SubtaskInfo {
        uid: Arc::from(open.uid.as_str()),
        index: open.index,
        parallelism: open.parallelism,
        max_parallelism: open.max_parallelism,
        attempt: open.attempt,
        interrupt: Interrupt::default(),
    };
    // The subtask owns every state: value state comes in the frames, map and list state is
    // asked of it (time-to-live included: its engine applies it).
    let kinds = module.description.kinds();
    let mut keyed = KeyedState::empty(kinds.clone());
    keyed.backend = Box::new(remote::RemoteState { channel: channel.clone() });
    // Broadcast state is the worker's own (every subtask's copy is the same); the subtask saves it
    // into its checkpoints and hands it back with `load-broadcast`.
    let states = module.description.states.clone();
    keyed.broadcast = BroadcastState::new(&states);
    let instantiated = instance::instantiate(&module, keyed, &limits, &info)?;
    let described = serde_json::json!({
        "contract": module.contract_version(),
        "sha256": module.sha256,
        "description": module.description,
    });
    let timed = module.has_timers();
    let guest = GuestInstance::open(module, instantiated, open.config, limits, info)?;
    Ok((described.to_string().into_bytes(), Served { guest, timed, states }))
}

/// Rewrites the items of a `migrate` message through the guest's `migrate`.
fn migrate(guest: &mut GuestInstance, message: &[u8]) -> Result<(u8, Vec<u8>), String> {
    let truncated = |_| "a truncated `migrate` (a bug of the subtask)".to_string();
    let mut reader = weir_frame::Reader::new(message);
    let (state, from_version, count) =
        (reader.u32().map_err(truncated)?, reader.u32().map_err(truncated)?, reader.u32().map_err(truncated)?);
    let items =
        (0..count).map(|_| reader.bytes().map(<[u8]>::to_vec)).collect::<Result<Vec<_>, _>>().map_err(truncated)?;
    let migrated = guest.migrate(state, from_version, &items)?;
    if migrated.len() != items.len() {
        return Err(format!("migrate returned {} items for {}", migrated.len(), items.len()));
    }
    let mut out = Vec::new();
    weir_frame::put_u32(&mut out, migrated.len() as u32);
    for item in &migrated {
        weir_frame::put_bytes(&mut out, item);
    }
    Ok((tag::OUTPUT, out))
}

/// Fills the instance's key table with the frame's, so that the guest's map and list calls by
/// slot name the keys the subtask knows them by.
fn load_key_table(keyed: &mut KeyedState, frame: &[u8], timed: bool) -> Result<(), weir_frame::Truncated> {
    let mut reader = weir_frame::Reader::new(frame);
    let (keys, values) = (reader.u32()?, reader.u32()?);
    reader.u32()?;
    if timed {
        reader.i64()?;
        reader.i64()?;
    }
    keyed.clear_key_table(keys as usize);
    for _ in 0..keys {
        let key = reader.bytes()?;
        keyed.slot_of(key, || 0);
        for _ in 0..values {
            reader.opt_bytes()?;
        }
    }
    Ok(())
}
