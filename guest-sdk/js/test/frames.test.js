// Unit tests of the SDK's frames (docs/batch-frames.md), run by Node (`node --test`) with the
// host's imports replaced: `cargo xtask test` runs them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
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
const event = (slot, ts, value, flags = 0, input = 0) => [
  ['u32', slot],
  ['u8', ts === null ? 0 : 1],
  ['i64', ts ?? 0],
  ['u8', flags],
  ['u8', input],
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

class TimerEcho {
  static describe() {
    return new Description('timer-echo', '1.0.0').valueState('open', 1).timeToLive(60_000);
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

const vectors = JSON.parse(readFileSync(new URL('../../../docs/frame-vectors.json', import.meta.url), 'utf8'));
class Split {
  static describe() {
    return new Description('split', '1.0.0').input('main').input('other').sideOutput('other');
  }
  process(ctx, event) {
    if (ctx.input === 'other') ctx.emitTo('other', event.value);
    else ctx.emit(event.value);
  }
}

const operators = { count: Count, 'timer-echo': TimerEcho, split: Split };

test('the frame test vectors of docs/frame-vectors.json', () => {
  assert.ok(vectors.cases.length >= 4);
  for (const c of vectors.cases) {
    const op = exportOperator(operators[c.operator]);
    op.open('{}', context);
    const input = new Uint8Array(Buffer.from(c.input, 'hex'));
    const output = c.call === 'on-timers' ? op.onTimers(input) : op.processBatch(input);
    assert.equal(Buffer.from(output).toString('hex'), c.output, c.name);
  }
  assert.equal(exportOperator(TimerEcho).describe().states[0].timeToLive, 60000n);
});

test('whatever is thrown reaches the host as a string with its message', () => {
  assert.equal(messageOf(new OperatorError('no')), 'no');
  const typeError = new TypeError('x is undefined');
  typeError.stack = 'process@pages.js:21:9\nprocessBatch@pages.js:461:12\nguarded@pages.js:484:10\n';
  assert.equal(messageOf(typeError), 'TypeError: x is undefined\n  at process@pages.js:21:9');
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
  const noKey = frame([...header(0, 1, 1), ['u32', NONE], ['none'], ['u8', 0], ['i64', 0], ['u8', 0], ['u8', 0], ['bytes', 'v']]);
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
    // An Error's stack follows its message.
    (thrown) => thrown.startsWith("state 'count' cannot be migrated from schema version 1: not a count\n  at "),
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
