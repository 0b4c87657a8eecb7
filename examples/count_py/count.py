"""Keyed running count, in Python: the same operator as examples/count, emitting identical lines."""
import weir_guest


class Count:
    @staticmethod
    def describe():
        return weir_guest.Description("count", "1.0.0").value_state("count", 1)

    def __init__(self, ctx):
        self.count = ctx.value_state("count")

    def process(self, ctx, event):
        n = (self.count.get(ctx) or 0) + 1
        self.count.set(ctx, n)
        ctx.emit_json({"key": (event.key or b"").decode("utf-8", "replace"), "count": n})


Operator = weir_guest.export(Count)
