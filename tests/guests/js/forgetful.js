// A broken count for `weir check` to find: it keeps its counts in the guest's memory, and loses
// them whenever a batch starts (as a guest that forgets the host owns the state would across a
// restart). Its first batch is right; the second is not.
import { Description, exportOperator } from '../../../guest-sdk/js/weir-guest.js';

class Forgetful {
  static describe() {
    return new Description('count', '1.0.0').valueState('count', 1);
  }

  constructor() {
    this.counts = new Map();
    this.batch = null;
  }

  process(ctx, event) {
    if (ctx !== this.batch) {
      this.batch = ctx;
      this.counts.clear();
    }
    const key = event.keyText();
    const n = (this.counts.get(key) ?? 0) + 1;
    this.counts.set(key, n);
    ctx.emitJson({ key, count: n });
  }
}

export const operator = exportOperator(Forgetful);
