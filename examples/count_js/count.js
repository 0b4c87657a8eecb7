// Keyed running count, in JavaScript: the same operator as examples/count, emitting identical
// lines ({"key":…,"count":n}) and storing the same state (a bare JSON number per key).
import { Description, exportOperator } from '../../guest-sdk/js/weir-guest.js';

class Count {
  static describe() {
    return new Description('count', '1.0.0').valueState('count', 1);
  }

  constructor(ctx) {
    this.count = ctx.valueState('count');
  }

  process(ctx, event) {
    const n = (this.count.get(ctx) ?? 0) + 1;
    this.count.set(ctx, n);
    ctx.emitJson({ key: event.keyText(), count: n });
  }
}

export const operator = exportOperator(Count);
