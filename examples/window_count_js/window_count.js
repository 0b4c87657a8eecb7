// Tumbling event-time window count, in JavaScript: the same operator as examples/window_count,
// with the same state layout ([[start, count], …] per key) and identical output lines
// ({"key":…,"start":<ms>,"end":<ms>,"count":n}, once the watermark passes the window's end).
// Events of windows already emitted are late and dropped.
import { Description, OperatorError, durationMs, exportOperator } from '../../guest-sdk/js/weir-guest.js';

class WindowCount {
  static describe() {
    return new Description('window_count', '1.0.0').valueState('windows', 1);
  }

  constructor(ctx) {
    const size = String(ctx.config.size ?? '');
    this.size = durationMs(size);
    if (this.size === null) throw new OperatorError(`size "${size}" is not a duration such as "10s" or "500ms"`);
    this.windows = ctx.valueState('windows');
  }

  process(ctx, event) {
    if (event.timestamp === null) {
      throw new OperatorError(
        'an event without a timestamp: window_count needs event time (timestamp-field on the source)',
      );
    }
    const start = event.timestamp - (((event.timestamp % this.size) + this.size) % this.size);
    const last = start + this.size - 1;
    if (ctx.watermark !== null && last <= ctx.watermark) return; // its window has been emitted: late
    const windows = this.windows.get(ctx) ?? [];
    const i = windows.findIndex(([s]) => s >= start);
    if (i >= 0 && windows[i][0] === start) {
      windows[i][1] += 1;
    } else {
      windows.splice(i < 0 ? windows.length : i, 0, [start, 1]);
      ctx.registerEventTimeTimer(last);
    }
    this.windows.set(ctx, windows);
  }

  onTimer(ctx, timer) {
    const start = timer.time + 1 - this.size;
    const windows = this.windows.get(ctx) ?? [];
    const i = windows.findIndex(([s]) => s === start);
    if (i < 0) return;
    const [[, count]] = windows.splice(i, 1);
    if (windows.length > 0) this.windows.set(ctx, windows);
    else this.windows.clear(ctx);
    ctx.emitJson({ key: timer.keyText(), start, end: start + this.size, count });
  }
}

export const operator = exportOperator(WindowCount);
