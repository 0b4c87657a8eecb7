// weir's JavaScript SDK: write stream operators in JavaScript, built into Wasm components with
// componentize-js. See README.md ("In JavaScript") and examples/count_js.
//
// The component's imports are bound here; everything else is in core.js.
import * as state from 'weir:operator/state@0.4.0';
import * as log from 'weir:operator/log@0.4.0';
import { bindHost } from './core.js';

bindHost(state, log);

export * from './core.js';
