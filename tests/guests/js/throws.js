// A JavaScript operator that fails: `process` throws a TypeError of its own making after a
// number of events (config `{ after = n }`), and the constructor refuses a config without it.
// The job must fail with the error's message, not a trap.
import { Description, exportOperator } from '../../../guest-sdk/js/weir-guest.js';

class Throws {
  static describe() {
    return new Description('throws', '1.0.0').valueState('seen', 1);
  }

  constructor(ctx) {
    if (typeof ctx.config.after !== 'number') throw new Error('config needs `after`, a number of events');
    this.after = ctx.config.after;
    this.seen = 0;
  }

  process(ctx, event) {
    this.seen += 1;
    if (this.seen > this.after) {
      throw new TypeError(`event ${this.seen} of key ${event.keyText()} is one too many`);
    }
    ctx.emit(event.value);
  }
}

export const operator = exportOperator(Throws);
