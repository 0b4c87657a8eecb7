// Unit tests of the SDK's frames (docs/batch-frames.md), run by Node (`node --test`) with the
// host's imports replaced: `cargo xtask test` runs them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Description, OperatorError, bindHost, exportOperator, durationMs, messageOf } from '../core.js';

bindHost({}, { log: () => {} });

const NONE = 0xffffffff;

/// Little-endian frame bytes from a list of [kind, value] parts.
function frame(parts) {
  const out = [];
  const u32 = (v) => out.push(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  const i64 = (v) => {
    const big = BigInt.asUintN(64, BigInt(v));
    for (let i = 0n; i < 8n; i++) out.push(Number((big >> (8n * i)) & 0xffn));
  };
  const bytes = (b) => {
    const data = typeof b === 'string' ? new TextEncoder().encode(b) : b;
    u32(data.length);
    out.push(...data);
  };
  for (const [kind, v] of parts) {
    if (kind === 'u32') u32(v);
    else if (kind === 'u8') out.push(v);
    else if (kind === 'i64') i64(v);
    else if (kind === 'bytes') bytes(v);
    else if (kind === 'none') u32(NONE);
    else throw new Error(kind);
  }
  return new Uint8Array(out);
}

const header = (keys, values, count, watermark = -(2n ** 63n), now = 1000) => [
  ['u32', keys],
  ['u32', values],
  ['u32', count],
  ['i64', watermark],
  ['i64', now],
];
const event = (slot, ts, value, flags = 0) => [
  ['u32', slot],
  ['u8', ts === null ? 0 : 1],
  ['i64', ts ?? 0],
  ['u8', flags],
  ['bytes', value],
];

class Count {
  static describe() {
    return new Description('count', '1.0.0').valueState('count', 1);
  }
  constructor(ctx) {
    this.count = ctx.valueState('count');
  }
  process(ctx, e) {
    const n = (this.count.get(ctx) ?? 0) + 1;
    this.count.set(ctx, n);
    ctx.emitJson({ key: e.keyText(), count: n });
  }
}

const context = { uid: 'count', subtaskIndex: 0, parallelism: 1, maxParallelism: 128, attempt: 0 };

test('a keyed batch: state read once per key, emits with key and timestamp, one write per key', () => {
  const op = exportOperator(Count);
  op.open('{}', context);
  const input = frame([
    ...header(2, 1, 3),
    ['bytes', 'a'],
    ['bytes', '4'],
    ['bytes', 'b'],
    ['none'],
    ...event(0, 7, '{}'),
    ...event(1, null, '{}'),
    ...event(0, 9, '{}', 1),
  ]);
  const expected = frame([
    ['u32', 3],
    ['bytes', 'a'],
    ['u8', 1],
    ['i64', 7],
    ['bytes', '{"key":"a","count":5}'],
    ['bytes', 'b'],
    ['u8', 0],
    ['i64', 0],
    ['bytes', '{"key":"b","count":1}'],
    ['bytes', 'a'],
    ['u8', 1],
    ['i64', 9],
    ['bytes', '{"key":"a","count":6}'],
    ['u32', 2],
    ['u32', 0],
    ['u32', 0],
    ['bytes', '6'],
    ['u32', 1],
    ['u32', 0],
    ['bytes', '1'],
    ['u32', 0],
  ]);
  assert.deepEqual(Array.from(op.processBatch(input)), Array.from(expected));
  // The output buffer is reused: a second batch gives a frame of its own.
  const empty = frame([...header(0, 1, 0)]);
  assert.deepEqual(Array.from(op.processBatch(empty)), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
});

class Windows {
  static describe() {
    return new Description('w', '1.0.0').valueState('open', 1).timeToLive(60_000);
  }
  constructor(ctx) {
    this.open = ctx.valueState('open');
  }
  process(ctx, e) {
    this.open.set(ctx, true);
    ctx.registerEventTimeTimer(e.timestamp + 10);
    ctx.deleteProcessingTimeTimer(-5);
  }
  onTimer(ctx, timer) {
    this.open.clear(ctx);
    ctx.emit(`fired ${timer.keyText()} at ${timer.time} wm ${ctx.watermark}`);
  }
}

test('timers: operations in the output frame, a timer frame fires onTimer', () => {
  const op = exportOperator(Windows);
  assert.equal(op.describe().states[0].timeToLive, 60000n);
  op.open('{}', context);
  const out = op.processBatch(frame([...header(1, 1, 1), ['bytes', 'k'], ['none'], ...event(0, 100, 'x')]));
  const expected = frame([
    ['u32', 0],
    ['u32', 1],
    ['u32', 0],
    ['u32', 0],
    ['bytes', 'true'],
    ['u32', 2],
    ['u32', 0],
    ['u8', 0],
    ['i64', 110],
    ['u32', 0],
    ['u8', 3],
    ['i64', -5],
  ]);
  assert.deepEqual(Array.from(out), Array.from(expected));
  const timers = frame([...header(1, 1, 1, 120), ['bytes', 'k'], ['bytes', 'true'], ['u32', 0], ['u8', 0], ['i64', 110]]);
  const fired = frame([
    ['u32', 1],
    ['bytes', 'k'],
    ['u8', 1],
    ['i64', 110],
    ['bytes', 'fired k at 110 wm 120'],
    ['u32', 1],
    ['u32', 0],
    ['u32', 0],
    ['none'],
    ['u32', 0],
  ]);
  assert.deepEqual(Array.from(op.onTimers(timers)), Array.from(fired));
});

test('whatever is thrown reaches the host as a string with its message', () => {
  assert.equal(messageOf(new OperatorError('no')), 'no');
  assert.equal(messageOf(new TypeError('x is undefined')), 'TypeError: x is undefined');
  assert.equal(messageOf('plain'), 'plain');
  assert.equal(messageOf(42), 'the operator threw 42');
  class Throws extends Count {
    process() {
      null.field;
    }
  }
  const op = exportOperator(Throws);
  op.open('{}', context);
  const input = frame([...header(1, 1, 1), ['bytes', 'a'], ['none'], ...event(0, null, '{}')]);
  assert.throws(() => op.processBatch(input), (thrown) => typeof thrown === 'string' && thrown.startsWith('TypeError'));
  assert.throws(() => op.processBatch(input.subarray(0, 40)), (thrown) => thrown === 'the host sent a truncated frame');
  assert.throws(() => exportOperator(Count).processBatch(input), (thrown) => thrown === 'process-batch called before open');
  class Unkeyed extends Count {
    process(ctx) {
      this.count.get(ctx);
    }
  }
  const unkeyed = exportOperator(Unkeyed);
  unkeyed.open('{}', context);
  const noKey = frame([...header(0, 1, 1), ['u32', NONE], ['none'], ['u8', 0], ['i64', 0], ['u8', 0], ['bytes', 'v']]);
  assert.throws(() => unkeyed.processBatch(noKey), /state 'count' is keyed state.*input = "hash"/);
});

test('migrate rewrites each item, and names the state when it cannot', () => {
  class V2 extends Count {
    static describe() {
      return new Description('count', '2.0.0').valueState('count', 2).migratesFrom(1);
    }
    static migrate(state, from, item) {
      const n = JSON.parse(new TextDecoder().decode(item));
      if (typeof n !== 'number') throw new Error('not a count');
      return JSON.stringify({ count: n });
    }
  }
  const op = exportOperator(V2);
  const items = op.migrate(0, 1, [new TextEncoder().encode('3')]);
  assert.equal(new TextDecoder().decode(items[0]), '{"count":3}');
  assert.throws(
    () => op.migrate(0, 1, [new TextEncoder().encode('"x"')]),
    (thrown) => thrown === "state 'count' cannot be migrated from schema version 1: not a count",
  );
});

test('durations', () => {
  assert.equal(durationMs('250ms'), 250);
  assert.equal(durationMs('10s'), 10000);
  assert.equal(durationMs('5 min'), 300000);
  assert.equal(durationMs('1h'), 3600000);
  assert.equal(durationMs('0s'), null);
  assert.equal(durationMs('10'), null);
});
