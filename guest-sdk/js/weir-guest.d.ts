// TypeScript declarations of weir's JavaScript SDK (weir-guest.js). Operators written in
// TypeScript are compiled to JavaScript first (tsc), then built as the README says.

/** Timer domains. */
export const EVENT_TIME: 0;
export const PROCESSING_TIME: 1;

/** A JSON value as JSON.parse returns it. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Throw it (or any Error, or a string) to fail the job, or from the constructor to refuse it, with its message. */
export class OperatorError extends Error {}

/** Name, version and declared states, in order: what `static describe()` returns. */
export class Description {
  constructor(name: string, version: string);
  valueState(name: string, schemaVersion: number): this;
  mapState(name: string, schemaVersion: number): this;
  listState(name: string, schemaVersion: number): this;
  /** The state declared last can be read when saved under one of these older schema versions (see `migrate`). */
  migratesFrom(...versions: number[]): this;
  /** The state declared last expires this many milliseconds (processing time) after it was last written. */
  timeToLive(millis: number): this;
}

/** What the operator's constructor is given. */
export interface OpenContext {
  /** The operator's `config` table from the job file. */
  readonly config: any;
  readonly uid: string;
  readonly subtaskIndex: number;
  readonly parallelism: number;
  readonly maxParallelism: number;
  readonly attempt: number;
  valueState<T = Json>(name: string): ValueState<T>;
  mapState<K = Json, V = Json>(name: string): MapState<K, V>;
  listState<T = Json>(name: string): ListState<T>;
}

/** One event, valid during the `process` call it is passed to. */
export interface Event {
  /** Its key (a view into the batch: copy it to keep it), null when it has none. */
  readonly key: Uint8Array | null;
  /** Its value (a view into the batch: copy it to keep it). */
  readonly value: Uint8Array;
  /** Its event time in milliseconds, null when it has none. */
  readonly timestamp: number | null;
  /** It came at or before the operator's watermark. */
  readonly late: boolean;
  keyText(): string;
  text(): string;
  json(): any;
}

/** A due timer. */
export interface Timer {
  readonly key: Uint8Array;
  readonly time: number;
  readonly domain: typeof EVENT_TIME | typeof PROCESSING_TIME;
  keyText(): string;
}

/** The context of the event or timer being handled. */
export interface Context {
  /** The current key (null for an unkeyed event without one). */
  readonly key: Uint8Array | null;
  /** The current event's (or event-time timer's) timestamp. */
  readonly timestamp: number | null;
  /** The operator's watermark, null before the first. */
  readonly watermark: number | null;
  /** The host's clock, milliseconds since the Unix epoch. */
  readonly processingTime: number;
  /** Emits a value (a string is UTF-8 encoded) with the current key and timestamp, or those given. */
  emit(value: string | Uint8Array, key?: Uint8Array | string | null, timestamp?: number | null): void;
  emitJson(value: unknown): void;
  registerEventTimeTimer(time: number): void;
  deleteEventTimeTimer(time: number): void;
  registerProcessingTimeTimer(time: number): void;
  deleteProcessingTimeTimer(time: number): void;
}

/** One JSON value per key; `get` returns undefined when the key has none. */
export interface ValueState<T = Json> {
  get(ctx: Context): T | undefined;
  /** Stores the value as it is at the end of the batch: call `set` again after changing it. */
  set(ctx: Context, value: T): void;
  clear(ctx: Context): void;
}

export interface MapState<K = Json, V = Json> {
  get(ctx: Context, mapKey: K): V | undefined;
  insert(ctx: Context, mapKey: K, value: V): void;
  remove(ctx: Context, mapKey: K): void;
  /** Every entry, ordered by the map keys' JSON bytes. */
  entries(ctx: Context): [K, V][];
  clear(ctx: Context): void;
}

export interface ListState<T = Json> {
  get(ctx: Context): T[];
  push(ctx: Context, value: T): void;
  clear(ctx: Context): void;
}

/** What `exportOperator` takes: a class. */
export interface OperatorClass {
  new (ctx: OpenContext): {
    process(ctx: Context, event: Event): void;
    onTimer?(ctx: Context, timer: Timer): void;
  };
  describe(): Description;
  /** Rewrites one stored item of `state` from schema version `fromVersion` to the current layout. */
  migrate?(state: string, fromVersion: number, item: Uint8Array): Uint8Array | string;
}

/** The `weir:operator/operator` export: `export const operator = exportOperator(MyOperator);`. */
export function exportOperator(operator: OperatorClass): unknown;

export function log(level: 'trace' | 'debug' | 'info' | 'warn' | 'error', message: string): void;
export function info(message: string): void;
export function warn(message: string): void;

/** Milliseconds in "250ms", "10s", "5m" or "1h"; null for anything else. */
export function durationMs(text: string): number | null;
