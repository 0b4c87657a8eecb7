// weir's JavaScript SDK, without its imports (see weir-guest.js): the batch frames of
// docs/batch-frames.md decoded and encoded, and the API operator authors use. Kept free of the
// component's imports so that Node.js runs its unit tests (test/) with the host's functions
// replaced.
//
// Rules this file keeps, learned the hard way:
// - No realm-dependent checks (`instanceof Uint8Array`, `Array.isArray` on host values):
//   componentize-js hands `list<u8>` over as a Uint8Array of another realm. Bytes are recognised
//   by their `byteLength`.
// - Every value thrown out of an export is a string: componentize-js turns a thrown string into
//   the `err` of a `result`, but a thrown `Error` into a trap that loses its message.
// - The guest runs in SpiderMonkey's interpreter (componentize-js has no JIT inside Wasm), where
//   every function call costs about 0.25 µs and every native call (a DataView read, a copy, a
//   JSON or UTF-8 step) about as much again whatever it does; a loop over bytes costs a call per
//   byte. So the per-event path makes few calls and lets natives move bytes: the input frame is
//   copied once into the buffer the output frame is written to, so that an emit copies its key
//   and timestamp with one `copyWithin`; each key's text and state are decoded once per batch;
//   one Event object serves a whole batch. (BENCHMARKS.md has the measured costs.)

export const EVENT_TIME = 0;
export const PROCESSING_TIME = 1;

const NONE = 0xffffffff;
const NO_WATERMARK = -(2 ** 63);
const LATE = 1;
const TWO_32 = 2 ** 32;
/// A value state cell not decoded yet.
const UNREAD = Symbol('unread');
/// `emit`'s default key: the current one.
const CURRENT = Symbol('current key');

const utf8 = new TextDecoder();
const encoder = new TextEncoder();

let host = null;

/// Gives the SDK the component's imports: `state` (weir:operator/state) and `log`
/// (weir:operator/log). weir-guest.js does it; tests pass stand-ins.
export function bindHost(state, log) {
  host = { state, log };
}

/// Throw it (or any Error) to fail the job, or from the constructor to refuse it, with this
/// message.
export class OperatorError extends Error {}

/// The message the host shows for a thrown value of any kind: an OperatorError's message; for
/// any other error its name and message, then its stack through the operator's code (the SDK's
/// own frames left out).
export function messageOf(thrown) {
  if (typeof thrown === 'string') return thrown;
  if (thrown !== null && typeof thrown === 'object' && typeof thrown.message === 'string') {
    const name = typeof thrown.name === 'string' && thrown.name !== 'Error' && thrown.name !== 'OperatorError'
      ? `${thrown.name}: `
      : '';
    return [name + thrown.message, ...operatorFrames(thrown).map((f) => `  at ${f}`)].join('\n');
  }
  return `the operator threw ${String(thrown)}`;
}

/// The frames of an error's stack inside the operator's own code: those before the first of the
/// SDK's (which bundling puts in the operator's file, so they are known by their names).
function operatorFrames(thrown) {
  if (thrown instanceof OperatorError || typeof thrown.stack !== 'string') return [];
  const frames = thrown.stack.split('\n').map((f) => f.trim().replace(/^at /, '')).filter(Boolean);
  const sdk = frames.findIndex((f) => /^(processBatch|onTimers|guarded|exportOperator)\b|(core|weir-guest)\.js:/.test(f));
  return sdk < 0 ? frames : frames.slice(0, sdk);
}

/// The bytes of `value`: a string is encoded as UTF-8, bytes are taken as they are.
function bytesOf(value, what) {
  if (typeof value === 'string') return encoder.encode(value);
  if (value !== null && typeof value === 'object' && typeof value.byteLength === 'number') return value;
  throw new OperatorError(`${what} must be a string or bytes (a Uint8Array), not ${typeof value}`);
}

function toJson(value) {
  const text = JSON.stringify(value);
  if (text === undefined) throw new OperatorError(`${typeof value} cannot be stored or emitted as JSON`);
  return text;
}

/// Name, version and declared states, in order.
export class Description {
  constructor(name, version) {
    this.name = name;
    this.version = version;
    this.states = [];
    this.inputs = [];
    this.sideOutputs = [];
  }
  /// Names its next input: the job file gives the operator one input per declared input, in this
  /// order, and `ctx.input` names the one an event came from.
  input(name) {
    this.inputs.push(name);
    return this;
  }
  /// Declares a side output: a stream of its own that `ctx.emitTo(name, …)` writes and job files
  /// read as "uid.name".
  sideOutput(name) {
    this.sideOutputs.push(name);
    return this;
  }
  /// Declares a broadcast state: a map that is not keyed, the same in every subtask, written only
  /// while processing a broadcast input.
  broadcastState(name, schemaVersion) {
    return this.#state(name, 'broadcast', schemaVersion);
  }
  valueState(name, schemaVersion) {
    return this.#state(name, 'value', schemaVersion);
  }
  mapState(name, schemaVersion) {
    return this.#state(name, 'map', schemaVersion);
  }
  listState(name, schemaVersion) {
    return this.#state(name, 'list', schemaVersion);
  }
  /// The state declared last can be read when saved under one of the older schema `versions`:
  /// the operator class's static `migrate(state, fromVersion, item)` rewrites each stored item.
  migratesFrom(...versions) {
    this.#last('migratesFrom').migratesFrom.push(...versions);
    return this;
  }
  /// The state declared last expires `millis` ms (processing time) after it was last written.
  timeToLive(millis) {
    this.#last('timeToLive').timeToLive = millis;
    return this;
  }
  #state(name, kind, schemaVersion) {
    this.states.push({ name, kind, schemaVersion, migratesFrom: [], timeToLive: undefined });
    return this;
  }
  #last(what) {
    if (this.states.length === 0) throw new OperatorError(`${what} must follow the declaration of the state it applies to`);
    return this.states[this.states.length - 1];
  }
  /// The WIT record `description`.
  toWit() {
    const states = this.states.map((s) => ({
      name: s.name,
      kind: s.kind,
      schemaVersion: s.schemaVersion,
      migratesFrom: s.migratesFrom,
      timeToLive: s.timeToLive === undefined ? undefined : BigInt(s.timeToLive),
    }));
    return { name: this.name, version: this.version, states, inputs: this.inputs, sideOutputs: this.sideOutputs };
  }
}

/// What `open` gives the operator's constructor: its config and where it runs.
export class OpenContext {
  constructor(config, context, states) {
    this.config = JSON.parse(config);
    this.uid = context.uid;
    this.subtaskIndex = context.subtaskIndex;
    this.parallelism = context.parallelism;
    this.maxParallelism = context.maxParallelism;
    this.attempt = context.attempt;
    this.states = states;
  }
  #declared(name, kind) {
    const index = this.states.findIndex((s) => s.name === name);
    if (index < 0) throw new OperatorError(`state '${name}' is not declared in describe()`);
    if (this.states[index].kind !== kind) throw new OperatorError(`state '${name}' is declared as a ${this.states[index].kind} state`);
    return index;
  }
  valueState(name) {
    this.#declared(name, 'value');
    const position = this.states.filter((s) => s.kind === 'value').findIndex((s) => s.name === name);
    return new ValueState(name, position);
  }
  mapState(name) {
    return new MapState(name, this.#declared(name, 'map'));
  }
  listState(name) {
    return new ListState(name, this.#declared(name, 'list'));
  }
  broadcastState(name) {
    return new BroadcastState(this.#declared(name, 'broadcast'));
  }
}

/// A growable byte buffer with little-endian writes.
class Buffer {
  constructor(size) {
    this.buf = new Uint8Array(size);
    this.dv = new DataView(this.buf.buffer);
    this.len = 0;
  }
  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
    this.dv = new DataView(grown.buffer);
  }
  u32(v) {
    this.reserve(4);
    this.dv.setUint32(this.len, v, true);
    this.len += 4;
  }
  u8(v) {
    this.reserve(1);
    this.buf[this.len++] = v;
  }
  i64(v) {
    this.reserve(8);
    const hi = Math.floor(v / TWO_32);
    this.dv.setUint32(this.len, v - hi * TWO_32, true);
    this.dv.setInt32(this.len + 4, hi, true);
    this.len += 8;
  }
  /// Bytes from elsewhere, as `bytes` (a u32 length, then them).
  bytes(b) {
    this.reserve(4 + b.byteLength);
    this.dv.setUint32(this.len, b.byteLength, true);
    this.buf.set(b, this.len + 4);
    this.len += 4 + b.byteLength;
  }
  /// A string as `bytes`, encoded straight into the buffer.
  text(s) {
    const at = this.len;
    this.reserve(4 + s.length * 3);
    // A view only as long as the text can take (encodeInto's cost grows with the view).
    const written = encoder.encodeInto(s, this.buf.subarray(at + 4, at + 4 + s.length * 3)).written;
    this.dv.setUint32(at, written, true);
    this.len = at + 4 + written;
  }
  optTimestamp(ts) {
    this.reserve(9);
    if (ts === null || ts === undefined) {
      this.buf.fill(0, this.len, this.len + 9);
      this.len += 9;
    } else {
      this.buf[this.len++] = 1;
      this.i64(ts);
    }
  }
}

/// The input frame being handled, copied to the start of a buffer, and the output frame written
/// after it (`start` on): an emit copies its key and timestamp from the input with one
/// `copyWithin`. One for the whole module: a guest handles one call at a time.
const frame = new Buffer(1 << 17);
frame.start = 0;
/// The timer operations of the output frame being written, appended to it at the end.
const timerOps = new Buffer(1 << 10);

/// Copies input frame `input` into `frame` and starts the output frame after it.
function load(input) {
  frame.len = 0;
  frame.reserve(input.length + 4);
  frame.buf.set(input, 0);
  frame.start = frame.len = input.length;
  frame.u32(0); // emit-count, set by finish
  timerOps.len = 0;
}

function truncated() {
  return new OperatorError('the host sent a truncated frame');
}

/// The u32 at `p` of the input frame.
function u32(p) {
  return frame.dv.getUint32(p, true);
}

/// The i64 at `p` of the input frame, as a Number: exact up to 2^53 ms (285,000 years), and for
/// i64::MIN.
function i64(p) {
  return frame.dv.getInt32(p + 4, true) * TWO_32 + frame.dv.getUint32(p, true);
}

/// One event, valid during the `process` call it is passed to (the SDK reuses the object).
export class Event {
  constructor(ctx) {
    this.ctx = ctx;
    this.slot = -1;
    this.unkeyed = null;
    this.timestamp = null;
    this.late = false;
    /// The index of the operator's input it came from (`ctx.input` names it).
    this.input = 0;
    this.start = 0;
    this.end = 0;
  }
  /// Its key's bytes (null when it has none; a view into the batch: copy them to keep them).
  get key() {
    return this.slot >= 0 ? this.ctx.keyBytes(this.slot) : this.unkeyed;
  }
  /// Its key as text, '' when it has none.
  keyText() {
    if (this.slot >= 0) return this.ctx.keyTexts[this.slot] ?? this.ctx.keyText(this.slot);
    return this.unkeyed === null ? '' : utf8.decode(this.unkeyed);
  }
  /// Its value's bytes (a view into the batch: copy them to keep them).
  get value() {
    return frame.buf.subarray(this.start, this.end);
  }
  /// Its value as text (UTF-8).
  text() {
    return utf8.decode(frame.buf.subarray(this.start, this.end));
  }
  /// Its value parsed as JSON.
  json() {
    return JSON.parse(utf8.decode(frame.buf.subarray(this.start, this.end)));
  }
}

/// A due timer: `key` (bytes), `time` (ms), `domain` (EVENT_TIME or PROCESSING_TIME).
export class Timer {
  constructor(ctx, slot, time, domain) {
    this.ctx = ctx;
    this.slot = slot;
    this.time = time;
    this.domain = domain;
  }
  get key() {
    return this.ctx.keyBytes(this.slot);
  }
  keyText() {
    return this.ctx.keyText(this.slot);
  }
}

/// The keyed context of the event or timer being handled: its key's state and timers, the time
/// (`watermark`: null before the first; `processingTime`: the host's clock in ms), and emits.
export class Context {
  /// Loads frame `input` and reads its header and key table; `pos` is then where its events or
  /// timers start. Keys and value states are kept as offsets and decoded when first asked for.
  constructor(input, valueStateCount, streams) {
    if (input.length < 28) throw truncated();
    /// The operator's declared input and side output names.
    this.streams = streams;
    /// The input of the current event (-1 in `onTimer`).
    this.inputIndex = -1;
    load(input);
    const end = input.length;
    const keyCount = u32(0);
    const valueCount = u32(4);
    if (valueCount !== valueStateCount) {
      throw new OperatorError(`the host sent ${valueCount} value states but the operator declares ${valueStateCount}`);
    }
    this.count = u32(8);
    const watermark = i64(12);
    this.watermark = watermark === NO_WATERMARK ? null : watermark;
    this.processingTime = i64(20);
    // Per slot: where its key's length is.
    const keyAt = new Array(keyCount);
    // Per slot and value state: where its bytes' length is (-1: absent), the value decoded
    // (UNREAD until it is), whether it was written.
    const cells = keyCount * valueCount;
    const rawAt = new Array(cells);
    let p = 28;
    for (let slot = 0; slot < keyCount; slot++) {
      if (p + 4 > end) throw truncated();
      keyAt[slot] = p;
      p += 4 + u32(p);
      for (let v = 0; v < valueCount; v++) {
        if (p + 4 > end) throw truncated();
        const len = u32(p);
        rawAt[slot * valueCount + v] = len === NONE ? -1 : p;
        p += len === NONE ? 4 : 4 + len;
      }
    }
    if (p > end) throw truncated();
    this.end = end;
    this.pos = p;
    this.keyAt = keyAt;
    this.keyTexts = new Array(keyCount);
    this.rawAt = rawAt;
    this.values = new Array(cells).fill(UNREAD);
    this.dirty = new Uint8Array(cells);
    this.valueCount = valueCount;
    this.slot = -1;
    this.unkeyed = null;
    this.timestamp = null;
    /// Where the current event's timestamp is in the input (-1: a timer's, written anew).
    this.timestampAt = -1;
    this.emitted = 0;
    this.timerOpCount = 0;
  }

  /// The current key's bytes (null for an unkeyed event without one).
  get key() {
    return this.slot >= 0 ? this.keyBytes(this.slot) : this.unkeyed;
  }

  /// The bytes of key `slot`.
  keyBytes(slot) {
    const at = this.keyAt[slot];
    return frame.buf.slice(at + 4, at + 4 + u32(at));
  }

  /// The text of key `slot`, decoded once per batch.
  keyText(slot) {
    const at = this.keyAt[slot];
    return (this.keyTexts[slot] ??= utf8.decode(frame.buf.subarray(at + 4, at + 4 + u32(at))));
  }

  /// The value of state cell `cell`, decoded once per batch (undefined: none).
  cellValue(cell) {
    let value = this.values[cell];
    if (value === UNREAD) {
      const at = this.rawAt[cell];
      value = at < 0 ? undefined : JSON.parse(utf8.decode(frame.buf.subarray(at + 4, at + 4 + u32(at))));
      this.values[cell] = value;
    }
    return value;
  }

  /// The name of the input the current event came from, as `describe` declares it ('' when it
  /// declares none, or in `onTimer`).
  get input() {
    return this.streams.inputs[this.inputIndex] ?? '';
  }

  /// Emits `value` to side output `side` (declared with `sideOutput`), with the current key and
  /// timestamp, or those given.
  emitTo(side, value, key = CURRENT, timestamp = CURRENT) {
    const output = this.streams.sideOutputs.indexOf(side) + 1;
    if (output === 0) throw new OperatorError(`side output '${side}' is not declared in describe(): declare it with .sideOutput('${side}')`);
    this.emit(value, key, timestamp, output);
  }

  /// Emits `value` as JSON to side output `side`.
  emitJsonTo(side, value) {
    this.emitTo(side, toJson(value));
  }

  /// Emits `value` (a string, or bytes) with the current key and timestamp, or those given.
  emit(value, key = CURRENT, timestamp = CURRENT, output = 0) {
    const f = frame;
    f.u8(output);
    if (key !== CURRENT) {
      if (key === null || key === undefined) f.u32(NONE);
      else f.bytes(bytesOf(key, 'an emitted key'));
    } else if (this.slot >= 0) {
      const at = this.keyAt[this.slot];
      const len = 4 + u32(at);
      f.reserve(len);
      f.buf.copyWithin(f.len, at, at + len);
      f.len += len;
    } else if (this.unkeyed === null) {
      f.u32(NONE);
    } else {
      f.bytes(this.unkeyed);
    }
    if (timestamp !== CURRENT) {
      f.optTimestamp(timestamp);
    } else if (this.timestampAt >= 0) {
      f.reserve(9);
      f.buf.copyWithin(f.len, this.timestampAt, this.timestampAt + 9);
      f.len += 9;
    } else {
      f.optTimestamp(this.timestamp);
    }
    if (typeof value === 'string') f.text(value);
    else f.bytes(bytesOf(value, 'an emitted value'));
    this.emitted++;
  }

  /// Emits `value` as JSON.
  emitJson(value) {
    this.emit(toJson(value));
  }

  /// `onTimer` is called for the current key once the watermark reaches `time`.
  registerEventTimeTimer(time) {
    this.#timerOp(EVENT_TIME, false, time);
  }
  deleteEventTimeTimer(time) {
    this.#timerOp(EVENT_TIME, true, time);
  }
  /// `onTimer` is called for the current key once the host's clock reaches `time`.
  registerProcessingTimeTimer(time) {
    this.#timerOp(PROCESSING_TIME, false, time);
  }
  deleteProcessingTimeTimer(time) {
    this.#timerOp(PROCESSING_TIME, true, time);
  }
  #timerOp(domain, del, time) {
    if (!Number.isSafeInteger(time)) throw new OperatorError(`a timer's time must be an integer of milliseconds, not ${time}`);
    timerOps.u32(this.keyedSlot());
    timerOps.u8((domain << 1) | (del ? 1 : 0));
    timerOps.i64(time);
    this.timerOpCount++;
  }

  /// The current key's slot; `state` names the state asked for, or none for a timer.
  keyedSlot(state) {
    if (this.slot < 0) {
      const what = state === undefined ? 'timers are' : `state '${state}' is keyed state, and keyed states are`;
      throw new OperatorError(
        `${what} kept per key, but this operator's input is not keyed: set input = "hash" on it in the job file`,
      );
    }
    return this.slot;
  }

  /// The output frame: emits, the write set, the timer operations.
  finish(valueStates) {
    const f = frame;
    f.dv.setUint32(f.start, this.emitted, true);
    const writesAt = f.len;
    f.u32(0);
    let writes = 0;
    const v = this.valueCount;
    for (let cell = 0; cell < this.dirty.length; cell++) {
      if (this.dirty[cell] === 0) continue;
      f.u32(Math.floor(cell / v));
      f.u32(valueStates[cell % v]);
      const value = this.values[cell];
      if (value === undefined) f.u32(NONE);
      else f.text(toJson(value));
      writes++;
    }
    f.dv.setUint32(writesAt, writes, true);
    f.u32(this.timerOpCount);
    f.reserve(timerOps.len);
    f.buf.set(timerOps.buf.subarray(0, timerOps.len), f.len);
    f.len += timerOps.len;
    return f.buf.subarray(f.start, f.len);
  }
}

/// A value state: one JSON value per key, read and written through the batch frames. `get`
/// returns `undefined` when the key has none. What `set` is given is stored as it is at the end
/// of the batch (as Flink's heap state keeps the object): call `set` after changing it.
export class ValueState {
  constructor(name, position) {
    this.name = name;
    this.position = position;
  }
  get(ctx) {
    const slot = ctx.slot >= 0 ? ctx.slot : ctx.keyedSlot(this.name);
    return ctx.cellValue(slot * ctx.valueCount + this.position);
  }
  set(ctx, value) {
    if (value === undefined) throw new OperatorError(`state '${this.name}': set undefined; use clear to remove a value`);
    const cell = (ctx.slot >= 0 ? ctx.slot : ctx.keyedSlot(this.name)) * ctx.valueCount + this.position;
    ctx.values[cell] = value;
    ctx.dirty[cell] = 1;
  }
  clear(ctx) {
    const cell = (ctx.slot >= 0 ? ctx.slot : ctx.keyedSlot(this.name)) * ctx.valueCount + this.position;
    ctx.values[cell] = undefined;
    ctx.dirty[cell] = 1;
  }
}

function parse(bytes) {
  return JSON.parse(utf8.decode(bytes));
}

function jsonBytes(value) {
  return encoder.encode(toJson(value));
}

/// A map state: JSON map keys to JSON values per key, one host call per operation.
export class MapState {
  constructor(name, index) {
    this.name = name;
    this.index = index;
  }
  get(ctx, mapKey) {
    const raw = host.state.mapGet(ctx.keyedSlot(this.name), this.index, jsonBytes(mapKey));
    return raw === undefined ? undefined : parse(raw);
  }
  insert(ctx, mapKey, value) {
    host.state.mapPut(ctx.keyedSlot(this.name), this.index, jsonBytes(mapKey), jsonBytes(value));
  }
  remove(ctx, mapKey) {
    host.state.mapRemove(ctx.keyedSlot(this.name), this.index, jsonBytes(mapKey));
  }
  /// Every [mapKey, value], ordered by the map keys' JSON bytes.
  entries(ctx) {
    return host.state.mapEntries(ctx.keyedSlot(this.name), this.index).map(([k, v]) => [parse(k), parse(v)]);
  }
  clear(ctx) {
    host.state.clear(ctx.keyedSlot(this.name), this.index);
  }
}

/// A list state: JSON values per key, oldest first.
export class ListState {
  constructor(name, index) {
    this.name = name;
    this.index = index;
  }
  get(ctx) {
    return host.state.listGet(ctx.keyedSlot(this.name), this.index).map(parse);
  }
  push(ctx, value) {
    host.state.listAppend(ctx.keyedSlot(this.name), this.index, jsonBytes(value));
  }
  clear(ctx) {
    host.state.clear(ctx.keyedSlot(this.name), this.index);
  }
}

/// A broadcast state: one map every subtask holds the same, written (`insert`, `remove`) only
/// while processing a broadcast input, read anywhere.
export class BroadcastState {
  constructor(index) {
    this.index = index;
  }
  get(ctx, mapKey) {
    const raw = host.state.broadcastGet(this.index, jsonBytes(mapKey));
    return raw === undefined ? undefined : parse(raw);
  }
  /// Every [mapKey, value], ordered by the map keys' JSON bytes.
  entries(ctx) {
    return host.state.broadcastEntries(this.index).map(([k, v]) => [parse(k), parse(v)]);
  }
  insert(ctx, mapKey, value) {
    host.state.broadcastPut(this.index, jsonBytes(mapKey), jsonBytes(value));
  }
  remove(ctx, mapKey) {
    host.state.broadcastRemove(this.index, jsonBytes(mapKey));
  }
}

/// Logs through the host's structured logs; `level` is 'trace', 'debug', 'info', 'warn' or 'error'.
export function log(level, message) {
  host.log.log(level, String(message));
}
export const info = (message) => log('info', message);
export const warn = (message) => log('warn', message);

/// Runs `operator.process` over the events of input frame `batch`; returns the output frame.
export function processBatch(operator, valueStates, batch, streams = NO_STREAMS) {
  const ctx = new Context(batch, valueStates.length, streams);
  const event = new Event(ctx);
  const dv = frame.dv;
  const end = ctx.end;
  const keys = ctx.keyAt.length;
  let p = ctx.pos;
  for (let i = 0; i < ctx.count; i++) {
    if (p + 19 > end) throw truncated();
    const slot = dv.getUint32(p, true);
    p += 4;
    if (slot === NONE) {
      const len = dv.getUint32(p, true);
      p += 4;
      event.unkeyed = len === NONE ? null : frame.buf.slice(p, p + len);
      if (len !== NONE) p += len;
      event.slot = -1;
    } else if (slot >= keys) {
      throw new OperatorError(`the host sent an event for slot ${slot} of ${keys}`);
    } else {
      event.slot = slot;
    }
    ctx.timestampAt = p;
    event.timestamp = frame.buf[p] === 0 ? null : i64(p + 1);
    event.late = (frame.buf[p + 9] & LATE) !== 0;
    event.input = frame.buf[p + 10];
    event.start = p + 15;
    p = event.end = p + 15 + dv.getUint32(p + 11, true);
    if (p > end) throw truncated();
    ctx.inputIndex = event.input;
    ctx.slot = event.slot;
    ctx.unkeyed = event.unkeyed;
    ctx.timestamp = event.timestamp;
    operator.process(ctx, event);
  }
  return ctx.finish(valueStates);
}

/// Runs `operator.onTimer` over the timers of timer frame `input`; returns the output frame.
export function onTimers(operator, valueStates, input, streams = NO_STREAMS) {
  const ctx = new Context(input, valueStates.length, streams);
  let p = ctx.pos;
  for (let i = 0; i < ctx.count; i++) {
    if (p + 13 > ctx.end) throw truncated();
    const slot = u32(p);
    const domain = frame.buf[p + 4];
    const time = i64(p + 5);
    p += 13;
    if (slot >= ctx.keyAt.length) throw new OperatorError(`the host sent a timer for slot ${slot} of ${ctx.keyAt.length}`);
    ctx.slot = slot;
    // What an event-time timer emits happens at its time (as in Flink).
    ctx.timestamp = domain === EVENT_TIME ? time : null;
    ctx.timestampAt = -1;
    operator.onTimer(ctx, new Timer(ctx, slot, time, domain));
  }
  return ctx.finish(valueStates);
}

/// An operator's streams when it declares no inputs and no side outputs.
const NO_STREAMS = { inputs: [], sideOutputs: [] };

/// Calls `f`, turning whatever it throws into the string the host shows.
function guarded(f) {
  try {
    return f();
  } catch (thrown) {
    throw messageOf(thrown);
  }
}

/// The `weir:operator/operator` export for operator class `Operator`: export it from the module
/// componentize-js builds as `export const operator = exportOperator(MyOperator);`.
export function exportOperator(Operator) {
  let instance = null;
  let valueStates = [];
  let streams = NO_STREAMS;
  const described = () => {
    const d = Operator.describe();
    if (!(d && Array.isArray(d.states))) throw new OperatorError('describe() must return a Description');
    return d;
  };
  return {
    describe() {
      return guarded(() => described().toWit());
    },
    open(config, context) {
      guarded(() => {
        const d = described();
        const states = d.states;
        streams = { inputs: d.inputs ?? [], sideOutputs: d.sideOutputs ?? [] };
        instance = new Operator(new OpenContext(config, context, states));
        valueStates = states.flatMap((s, i) => (s.kind === 'value' ? [i] : []));
      });
    },
    migrate(state, fromVersion, items) {
      return guarded(() => {
        const states = described().states;
        if (state >= states.length || typeof Operator.migrate !== 'function') {
          throw new OperatorError(`state #${state} cannot be migrated from schema version ${fromVersion}`);
        }
        const name = states[state].name;
        try {
          return items.map((item) => bytesOf(Operator.migrate(name, fromVersion, item), 'a migrated item'));
        } catch (thrown) {
          throw new OperatorError(`state '${name}' cannot be migrated from schema version ${fromVersion}: ${messageOf(thrown)}`);
        }
      });
    },
    processBatch(batch) {
      return guarded(() => {
        if (instance === null) throw new OperatorError('process-batch called before open');
        return processBatch(instance, valueStates, batch, streams);
      });
    },
    onTimers(frame) {
      return guarded(() => {
        if (instance === null) throw new OperatorError('on-timers called before open');
        if (typeof instance.onTimer !== 'function') throw new OperatorError('the operator set timers but has no onTimer method');
        return onTimers(instance, valueStates, frame, streams);
      });
    },
  };
}

const UNITS = { ms: 1, s: 1_000, m: 60_000, min: 60_000, h: 3_600_000 };

/// Milliseconds in "250ms", "10s", "5m" (or "5min") or "1h"; null for anything else (as the
/// Rust SDK's `duration_ms`).
export function durationMs(text) {
  const match = /^(\d+)\s*(ms|s|min|m|h)$/.exec(String(text).trim());
  if (match === null) return null;
  const ms = Number(match[1]) * UNITS[match[2]];
  return ms > 0 && Number.isSafeInteger(ms) ? ms : null;
}
