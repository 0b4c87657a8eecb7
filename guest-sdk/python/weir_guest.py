"""Write weir stream operators in Python (componentize-py).

The Python twin of the Rust SDK in guest-sdk/: declare state in ``describe``, take handles in
``__init__``, read and write the current key's state in ``process``, and export the class with
``Operator = weir_guest.export(MyOperator)`` in the module componentize-py builds; see
examples/count_py/count.py. State values are JSON, so state written by the Rust version of an
operator reads the same here. The batch frames (docs/batch-frames.md) are decoded and encoded
here; operator authors never see them. Built against weir:operator@0.4.0: events carry
``late`` and ``input``, the context the watermark, the host's processing time, timers, the name
of the event's input and side outputs (``emit_to``), an operator with timers defines
``on_timer(ctx, timer)``, and broadcast state is shared by every subtask.
"""
import json
import json.encoder
import struct
import traceback

from wit_world.imports import log as _log
from wit_world.imports import state as _state
from wit_world.imports import types as _types
from componentize_py_types import Err

NONE = 0xFFFFFFFF
NO_WATERMARK = -(2**63)
LATE = 1
EVENT_TIME, PROCESSING_TIME = 0, 1
_U32 = struct.Struct("<I")
_HEADER = struct.Struct("<IIIqq")
_TIMER = struct.Struct("<IBq")
# A keyed event's head: slot, has-timestamp, timestamp, flags, input, value length; and an
# unkeyed one's after its key.
_KEYED_EVENT = struct.Struct("<IBqBBI")
_EVENT_TAIL = struct.Struct("<BqBBI")
# An emitted event after its key: has-timestamp, timestamp, value length.
_EMIT_TAIL = struct.Struct("<BqI")
# A state write's head: slot, state, value length.
_WRITE = struct.Struct("<III")


# Same bytes as serde_json: no spaces, UTF-8 kept as is. json.dumps with these options builds a
# new encoder per call, and JSONEncoder.encode a new C encoder per call through two Python
# functions; one C encoder made once, called directly, costs a third of json.dumps. It has no
# table of objects being encoded (`markers`, which a shared encoder could not keep), so a cycle
# ends in CPython's recursion limit instead, reported as json.dumps reports a cycle.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_C_ENCODE = json.encoder.c_make_encoder and json.encoder.c_make_encoder(
    None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, True
)


def _dumps(value):
    # An int (not a bool, a subclass) is the commonest state value: %-formatting it costs a tenth
    # of the encoder's call and writes the same bytes.
    if type(value) is int:
        return b"%d" % value
    if _C_ENCODE is None:
        return _ENCODER.encode(value).encode()
    try:
        return "".join(_C_ENCODE(value, 0)).encode()
    except RecursionError:
        raise ValueError("Circular reference detected (or a value nested too deep for JSON)") from None


def _loads(raw):
    # The JSON of a non-negative integer, as _dumps and serde_json write it (no leading zero),
    # read by int() at a tenth of json.loads' cost; anything else is JSON's.
    if raw.isdigit() and (raw[0] != 48 or len(raw) == 1):
        return int(raw)
    return json.loads(raw)


class Description:
    """Name, version, declared states, inputs and side outputs, each in order."""

    def __init__(self, name, version):
        self.name, self.version, self.states = name, version, []
        self.inputs, self.side_outputs = [], []

    def input(self, name):
        """Names its next input: the job file gives the operator one input per declared input, in
        this order, and ``ctx.input`` names the one an event came from."""
        self.inputs.append(name)
        return self

    def side_output(self, name):
        """Declares a side output: a stream of its own that ``ctx.emit_to(name, …)`` writes and job
        files read as ``"uid.name"``."""
        self.side_outputs.append(name)
        return self

    def broadcast_state(self, name, schema_version):
        """Declares a broadcast state: a map that is not keyed, the same in every subtask, written
        only while processing a broadcast input."""
        return self._state(name, _types.StateKind.BROADCAST, schema_version)

    def value_state(self, name, schema_version):
        return self._state(name, _types.StateKind.VALUE, schema_version)

    def map_state(self, name, schema_version):
        return self._state(name, _types.StateKind.MAP, schema_version)

    def list_state(self, name, schema_version):
        return self._state(name, _types.StateKind.LIST, schema_version)

    def migrates_from(self, *versions):
        """Says that the state declared last can be read when saved under one of the older schema
        ``versions``: the operator class's ``migrate(state, from_version, item)`` static method
        rewrites each stored item (bytes in, bytes out) when it is restored, before ``__init__``."""
        if not self.states:
            raise OperatorError("migrates_from must follow the declaration of the state it migrates")
        self.states[-1].migrates_from.extend(versions)
        return self

    def time_to_live(self, millis):
        """Gives the state declared last a time-to-live of ``millis`` ms of processing time: an
        entry not written for that long expires and is never read again (Flink's state TTL)."""
        if not self.states:
            raise OperatorError("time_to_live must follow the declaration of the state it applies to")
        self.states[-1].time_to_live = millis
        return self

    def _state(self, name, kind, schema_version):
        self.states.append(_types.StateDescriptor(name, kind, schema_version, [], None))
        return self


class Event:
    """One event: ``key`` (bytes or None), ``value`` (bytes), ``timestamp`` (ms or None),
    ``late``: it came at or before the operator's watermark (the operator's choice what to do),
    and ``input``: the index of the operator's input it came from (``ctx.input`` names it)."""

    __slots__ = ("key", "value", "timestamp", "late", "input")

    def __init__(self, key, value, timestamp, late=False, input=0):
        self.key, self.value, self.timestamp, self.late, self.input = key, value, timestamp, late, input

    def json(self):
        return json.loads(self.value)


class Timer:
    """A due timer: ``key`` (bytes), ``time`` (ms), ``domain`` (EVENT_TIME or PROCESSING_TIME)."""

    __slots__ = ("key", "time", "domain")

    def __init__(self, key, time, domain):
        self.key, self.time, self.domain = key, time, domain


class OperatorError(Exception):
    """Raise to fail the job (or refuse it, from ``__init__``) with this message."""


def _failure(e):
    """What the host shows for an exception out of the operator: an ``OperatorError``'s message; for
    any other exception its type and message, then the traceback through the operator's code
    (this module's frames left out), as Python prints it."""
    if isinstance(e, OperatorError):
        return str(e)
    failure = traceback.TracebackException.from_exception(e)
    frames = [f for f in failure.stack if not f.filename.endswith("weir_guest.py")]
    text = "".join(failure.format_exception_only()).rstrip()
    if frames:
        text += "\nTraceback (most recent call last):\n" + "".join(traceback.StackSummary.from_list(frames).format()).rstrip()
    return text


class OpenContext:
    def __init__(self, config, context, states):
        self.config = json.loads(config)
        self.uid = context.uid
        self.subtask_index = context.subtask_index
        self.parallelism = context.parallelism
        self.max_parallelism = context.max_parallelism
        self.attempt = context.attempt
        self._states = states
        self._values = [i for i, s in enumerate(states) if s.kind == _types.StateKind.VALUE]

    def _declared(self, name, kind):
        for i, s in enumerate(self._states):
            if s.name == name:
                if s.kind != kind:
                    raise OperatorError(f"state '{name}' is declared as another kind of state")
                return i
        raise OperatorError(f"state '{name}' is not declared in describe()")

    def value_state(self, name):
        index = self._declared(name, _types.StateKind.VALUE)
        return ValueState(name, self._values.index(index))

    def map_state(self, name):
        return MapState(name, self._declared(name, _types.StateKind.MAP))

    def list_state(self, name):
        return ListState(name, self._declared(name, _types.StateKind.LIST))

    def broadcast_state(self, name):
        return BroadcastState(self._declared(name, _types.StateKind.BROADCAST))


class Context:
    """The keyed context of the event or timer being handled: its key's state and timers, time
    (``watermark``: None before the first; ``processing_time``: the host's clock, in ms), and the
    output frame."""

    def __init__(self, cells, value_count, watermark, processing_time, streams):
        self._cells = cells  # per slot: list of [bytes or None, dirty]
        self._inputs, self._side_outputs = streams
        self._input = None
        self._value_count = value_count
        self._out = bytearray(4)
        self._emitted = 0
        self._timer_ops = bytearray()
        self._timer_op_count = 0
        self.slot = None
        self.key = None
        self.timestamp = None
        self.watermark = None if watermark == NO_WATERMARK else watermark
        self.processing_time = processing_time

    def register_event_time_timer(self, time):
        """``on_timer`` is called for the current key once the watermark reaches ``time``."""
        self._timer_op(EVENT_TIME, False, time)

    def delete_event_time_timer(self, time):
        self._timer_op(EVENT_TIME, True, time)

    def register_processing_time_timer(self, time):
        """``on_timer`` is called for the current key once the host's clock reaches ``time``."""
        self._timer_op(PROCESSING_TIME, False, time)

    def delete_processing_time_timer(self, time):
        self._timer_op(PROCESSING_TIME, True, time)

    def _timer_op(self, domain, delete, time):
        if self.slot is None:
            raise OperatorError(
                'timers are kept per key, but this operator\'s input is not keyed: set input = "hash" on it in the job file'
            )
        self._timer_ops += _TIMER.pack(self.slot, (domain << 1) | int(delete), time)
        self._timer_op_count += 1

    def _slot(self, state):
        if self.slot is None:
            raise OperatorError(
                f"state '{state}' is keyed state, but this operator's input is not keyed: "
                'set input = "hash" on it in the job file'
            )
        return self.slot

    @property
    def input(self):
        """The name of the input the current event came from, as ``describe`` declares it ("" when
        it declares none, or in ``on_timer``)."""
        i = self._input
        return self._inputs[i] if i is not None and i < len(self._inputs) else ""

    def emit_to(self, side, value, key=..., timestamp=...):
        """Emits ``value`` (bytes) to side output ``side``, declared with ``side_output``."""
        try:
            output = self._side_outputs.index(side) + 1
        except ValueError:
            raise OperatorError(
                f"side output '{side}' is not declared in describe(): declare it with .side_output(\"{side}\")"
            ) from None
        self.emit(value, key, timestamp, output)

    def emit_json_to(self, side, value):
        self.emit_to(side, _dumps(value))

    def emit(self, value, key=..., timestamp=..., _output=0):
        """Emits ``value`` (bytes) with the current key and timestamp unless given."""
        key = self.key if key is ... else key
        timestamp = self.timestamp if timestamp is ... else timestamp
        out = self._out
        out.append(_output)
        if key is None:
            out += _U32.pack(NONE)
        else:
            out += _U32.pack(len(key))
            out += key
        out += _EMIT_TAIL.pack(timestamp is not None, timestamp or 0, len(value))
        out += value
        self._emitted += 1

    def emit_json(self, value):
        self.emit(_dumps(value))


class ValueState:
    def __init__(self, name, pos):
        self.name, self.pos = name, pos

    # get and set check the slot inline: a call to Context._slot costs as much as the rest.
    def get(self, ctx):
        slot = ctx.slot
        raw = ctx._cells[ctx._slot(self.name) if slot is None else slot][self.pos][0]
        return None if raw is None else _loads(raw)

    def set(self, ctx, value):
        slot = ctx.slot
        cell = ctx._cells[ctx._slot(self.name) if slot is None else slot][self.pos]
        cell[0], cell[1] = _dumps(value), True

    def clear(self, ctx):
        cell = ctx._cells[ctx._slot(self.name)][self.pos]
        cell[0], cell[1] = None, True


class MapState:
    def __init__(self, name, index):
        self.name, self.index = name, index

    def get(self, ctx, map_key):
        raw = _state.map_get(ctx._slot(self.name), self.index, _dumps(map_key))
        return None if raw is None else json.loads(raw)

    def insert(self, ctx, map_key, value):
        _state.map_put(ctx._slot(self.name), self.index, _dumps(map_key), _dumps(value))

    def remove(self, ctx, map_key):
        _state.map_remove(ctx._slot(self.name), self.index, _dumps(map_key))

    def entries(self, ctx):
        return [(json.loads(k), json.loads(v)) for k, v in _state.map_entries(ctx._slot(self.name), self.index)]

    def clear(self, ctx):
        _state.clear(ctx._slot(self.name), self.index)


class ListState:
    def __init__(self, name, index):
        self.name, self.index = name, index

    def get(self, ctx):
        return [json.loads(v) for v in _state.list_get(ctx._slot(self.name), self.index)]

    def push(self, ctx, value):
        _state.list_append(ctx._slot(self.name), self.index, _dumps(value))

    def clear(self, ctx):
        _state.clear(ctx._slot(self.name), self.index)


class BroadcastState:
    """A map every subtask holds the same: written (``insert``, ``remove``) only while processing a
    broadcast input, read anywhere."""

    def __init__(self, index):
        self.index = index

    def get(self, ctx, map_key):
        raw = _state.broadcast_get(self.index, _dumps(map_key))
        return None if raw is None else json.loads(raw)

    def entries(self, ctx):
        return [(json.loads(k), json.loads(v)) for k, v in _state.broadcast_entries(self.index)]

    def insert(self, ctx, map_key, value):
        _state.broadcast_put(self.index, _dumps(map_key), _dumps(value))

    def remove(self, ctx, map_key):
        _state.broadcast_remove(self.index, _dumps(map_key))


def log(level, message):
    _log.log(level, message)


def info(message):
    _log.log(_types.Level.INFO, message)


def warn(message):
    _log.log(_types.Level.WARN, message)


def _read_header(buf, value_states, streams):
    """From frame `buf` (bytes): its count of events or timers, key table, cells, the context
    (with the watermark, processing time and the operator's `streams`: its input and side output
    names), and where the events or timers start."""
    key_count, value_count, count, watermark, now = _HEADER.unpack_from(buf, 0)
    if value_count != len(value_states):
        raise OperatorError(f"the host sent {value_count} value states but the operator declares {len(value_states)}")
    pos = _HEADER.size
    keys, cells = [], []
    u32 = _U32.unpack_from
    for _ in range(key_count):
        (n,) = u32(buf, pos)
        pos += 4
        keys.append(buf[pos : pos + n])
        pos += n
        row = []
        for _ in range(value_count):
            (n,) = u32(buf, pos)
            pos += 4
            if n == NONE:
                row.append([None, False])
            else:
                row.append([buf[pos : pos + n], False])
                pos += n
        cells.append(row)
    return count, keys, cells, Context(cells, value_count, watermark, now, streams), pos


def _finish(ctx, cells, value_states):
    """The output frame: emits, the write set, the timer operations."""
    out = ctx._out
    out[0:4] = _U32.pack(ctx._emitted)
    writes = [
        (slot, value_states[p], cell[0]) for slot, row in enumerate(cells) for p, cell in enumerate(row) if cell[1]
    ]
    out += _U32.pack(len(writes))
    for slot, state, raw in writes:
        if raw is None:
            out += _WRITE.pack(slot, state, NONE)
        else:
            out += _WRITE.pack(slot, state, len(raw))
            out += raw
    out += _U32.pack(ctx._timer_op_count)
    out += ctx._timer_ops
    return bytes(out)


def _process_batch(operator, value_states, streams, batch):
    # Every step of this loop is an interpreted bytecode or a call, each costing about as much
    # as the bytes it moves: one unpack reads a keyed event's head, slices of `batch` (bytes)
    # copy its value in one step.
    batch = bytes(batch)
    event_count, keys, cells, ctx, pos = _read_header(batch, value_states, streams)
    process = operator.process
    for _ in range(event_count):
        slot, has_ts, ts, flags, input, n = _KEYED_EVENT.unpack_from(batch, pos)
        if slot != NONE:
            key = keys[slot]
            pos += _KEYED_EVENT.size
        else:
            slot = None
            (n,) = _U32.unpack_from(batch, pos + 4)
            pos += 8
            key = None if n == NONE else batch[pos : pos + n]
            pos += 0 if n == NONE else n
            has_ts, ts, flags, input, n = _EVENT_TAIL.unpack_from(batch, pos)
            pos += _EVENT_TAIL.size
        value = batch[pos : pos + n]
        pos += n
        ts = ts if has_ts else None
        ctx.slot, ctx.key, ctx.timestamp, ctx._input = slot, key, ts, input
        process(ctx, Event(key, value, ts, flags & LATE != 0, input))
    return _finish(ctx, cells, value_states)


def _on_timers(operator, value_states, streams, frame):
    buf = bytes(frame)
    timer_count, keys, cells, ctx, pos = _read_header(buf, value_states, streams)
    for _ in range(timer_count):
        slot, domain, time = _TIMER.unpack_from(buf, pos)
        pos += _TIMER.size
        ctx.slot, ctx.key = slot, keys[slot]
        # What an event-time timer emits happens at its time (as in Flink).
        ctx.timestamp = time if domain == EVENT_TIME else None
        operator.on_timer(ctx, Timer(keys[slot], time, domain))
    return _finish(ctx, cells, value_states)


def export(operator_class):
    """Returns the class componentize-py exports as ``weir:operator/operator``."""

    class Operator:
        instance = None
        value_states = []
        streams = ([], [])

        def describe(self):
            d = operator_class.describe()
            return _types.Description(d.name, d.version, d.states, d.inputs, d.side_outputs)

        def open(self, config, context):
            d = operator_class.describe()
            states = d.states
            Operator.streams = (d.inputs, d.side_outputs)
            try:
                Operator.instance = operator_class(OpenContext(config, context, states))
            except Exception as e:
                raise Err(_failure(e))
            Operator.value_states = [i for i, s in enumerate(states) if s.kind == _types.StateKind.VALUE]

        def migrate(self, state, from_version, items):
            states = operator_class.describe().states
            if state >= len(states) or not hasattr(operator_class, "migrate"):
                raise Err(f"state #{state} cannot be migrated from schema version {from_version}")
            name = states[state].name
            try:
                return [operator_class.migrate(name, from_version, item) for item in items]
            except Exception as e:
                raise Err(f"state '{name}' cannot be migrated from schema version {from_version}: {_failure(e)}")

        def process_batch(self, batch):
            if Operator.instance is None:
                raise Err("process-batch called before open")
            try:
                return _process_batch(Operator.instance, Operator.value_states, Operator.streams, batch)
            except Exception as e:
                raise Err(_failure(e))

        def on_timers(self, timers):
            if Operator.instance is None:
                raise Err("on-timers called before open")
            if not hasattr(Operator.instance, "on_timer"):
                raise Err("the operator set timers but has no on_timer method")
            try:
                return _on_timers(Operator.instance, Operator.value_states, Operator.streams, timers)
            except Exception as e:
                raise Err(_failure(e))

    return Operator
