// Version 2 of the keyed count, in JavaScript: the same operator as examples/count_v2, emitting
// identical lines ({"key":…,"count":n,"v":2}) and storing the same layout: schema version 2
// keeps {"count":n} where version 1 kept a bare number, and `migrate` rewrites version 1's
// counts when they are restored into it (an upgrade from count or count_js).
import { Description, exportOperator } from '../../guest-sdk/js/weir-guest.js';

class Count {
  static describe() {
    return new Description('count', '2.0.0').valueState('count', 2).migratesFrom(1);
  }

  /// Schema version 1 is a bare JSON number.
  static migrate(state, fromVersion, item) {
    const count = JSON.parse(new TextDecoder().decode(item));
    if (typeof count !== 'number') throw new Error(`not a count: ${JSON.stringify(count)}`);
    return JSON.stringify({ count });
  }

  constructor(ctx) {
    this.counter = ctx.valueState('count');
  }

  process(ctx, event) {
    const n = (this.counter.get(ctx)?.count ?? 0) + 1;
    this.counter.set(ctx, { count: n });
    ctx.emitJson({ key: event.keyText(), count: n, v: 2 });
  }
}

export const operator = exportOperator(Count);
