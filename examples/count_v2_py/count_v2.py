"""Version 2 of the keyed count, in Python: the same operator as examples/count_v2, emitting
identical lines ({"key":…,"count":…,"v":2}) and storing the same layout: schema version 2 keeps
{"count":n} where version 1 kept a bare number, and ``migrate`` rewrites version 1's counts when
they are restored into it."""
import json

import weir_guest


class Count:
    @staticmethod
    def describe():
        return weir_guest.Description("count", "2.0.0").value_state("count", 2).migrates_from(1)

    @staticmethod
    def migrate(state, from_version, item):
        # Schema version 1 is a bare JSON number.
        return json.dumps({"count": json.loads(item)}, separators=(",", ":")).encode()

    def __init__(self, ctx):
        self.counter = ctx.value_state("count")

    def process(self, ctx, event):
        n = (self.counter.get(ctx) or {"count": 0})["count"] + 1
        self.counter.set(ctx, {"count": n})
        ctx.emit_json({"key": (event.key or b"").decode("utf-8", "replace"), "count": n, "v": 2})


Operator = weir_guest.export(Count)
