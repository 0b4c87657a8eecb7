"""The Python SDK against the frame test vectors every SDK shares (docs/frame-vectors.json), run
by plain CPython (`python3 guest-sdk/python/test_vectors.py`; `cargo xtask test` runs it) with the
componentize-py bindings weir_guest imports replaced by stand-ins."""
import enum
import json
import pathlib
import sys
import types


def _stand_ins():
    """Modules standing in for componentize-py's generated bindings."""

    class StateKind(enum.Enum):
        VALUE = 0
        MAP = 1
        LIST = 2
        BROADCAST = 3

    class Level(enum.Enum):
        TRACE, DEBUG, INFO, WARN, ERROR = range(5)

    class StateDescriptor:
        def __init__(self, name, kind, schema_version, migrates_from, time_to_live):
            self.name, self.kind, self.schema_version = name, kind, schema_version
            self.migrates_from, self.time_to_live = migrates_from, time_to_live

    class Description:
        def __init__(self, name, version, states, inputs, side_outputs):
            self.name, self.version, self.states = name, version, states
            self.inputs, self.side_outputs = inputs, side_outputs

    world = types.ModuleType("wit_world")
    imports = types.ModuleType("wit_world.imports")
    imports.types = types.SimpleNamespace(
        StateKind=StateKind, Level=Level, StateDescriptor=StateDescriptor, Description=Description
    )
    imports.log = types.SimpleNamespace(log=lambda level, message: None)
    imports.state = types.SimpleNamespace()
    world.imports = imports
    errs = types.ModuleType("componentize_py_types")

    class Err(Exception):
        pass

    errs.Err = Err
    sys.modules.update({"wit_world": world, "wit_world.imports": imports, "componentize_py_types": errs})


_stand_ins()
ROOT = pathlib.Path(__file__).parents[2]
sys.path[:0] = [str(ROOT / "guest-sdk/python"), str(ROOT / "examples/count_py")]
import weir_guest  # noqa: E402
from count import Count  # noqa: E402  (the example operator: the vectors' "count")


class TimerEcho:
    @staticmethod
    def describe():
        return weir_guest.Description("timer-echo", "1.0.0").value_state("open", 1).time_to_live(60_000)

    def __init__(self, ctx):
        self.open = ctx.value_state("open")

    def process(self, ctx, event):
        self.open.set(ctx, True)
        ctx.register_event_time_timer(event.timestamp + 10)
        ctx.delete_processing_time_timer(-5)

    def on_timer(self, ctx, timer):
        self.open.clear(ctx)
        ctx.emit(f"fired {timer.key.decode()} at {timer.time} wm {ctx.watermark}".encode())


class Split:
    @staticmethod
    def describe():
        return weir_guest.Description("split", "1.0.0").input("main").input("other").side_output("other")

    def __init__(self, ctx):
        pass

    def process(self, ctx, event):
        if ctx.input == "other":
            ctx.emit_to("other", event.value)
        else:
            ctx.emit(event.value)


def main():
    path = ROOT / "docs" / "frame-vectors.json"
    cases = json.loads(path.read_text())["cases"]
    context = types.SimpleNamespace(uid="t", subtask_index=0, parallelism=1, max_parallelism=128, attempt=0)
    failed = 0
    for case in cases:
        operator = weir_guest.export({"count": Count, "timer-echo": TimerEcho, "split": Split}[case["operator"]])()
        operator.open("{}", context)
        frame = bytes.fromhex(case["input"])
        out = operator.on_timers(frame) if case["call"] == "on-timers" else operator.process_batch(frame)
        if out.hex() != case["output"]:
            failed += 1
            print(f"FAILED {case['name']}:\n  got      {out.hex()}\n  expected {case['output']}")
    print(f"{len(cases) - failed} of {len(cases)} frame test vectors pass")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
