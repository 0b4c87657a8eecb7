"""Click counts per key with alerts from broadcast rules, in Python: the same operator as
examples/rules, with the same state layout and identical output lines."""
import weir_guest

EVERY_KEY = "*"


class Rules:
    @staticmethod
    def describe():
        return (
            weir_guest.Description("rules", "1.0.0")
            .broadcast_state("rules", 1)
            .value_state("count", 1)
            .value_state("pending", 1)
            .input("clicks")
            .input("rules")
            .side_output("alerts")
        )

    def __init__(self, ctx):
        # Every rule: max clicks by [key ("*": every key), time it is in force from].
        self.rules = ctx.broadcast_state("rules")
        self.count = ctx.value_state("count")
        # The times of the key's clicks waiting for the watermark.
        self.pending = ctx.value_state("pending")

    def process(self, ctx, event):
        ts = event.timestamp
        if ts is None:
            raise weir_guest.OperatorError(
                f"an event of '{ctx.input}' without a timestamp: set timestamp-field on its source"
            )
        if ctx.input == "rules":
            rule = event.json()
            self.rules.insert(ctx, [rule.get("key", EVERY_KEY), ts], rule["max_clicks"])
        else:
            self.pending.set(ctx, (self.pending.get(ctx) or []) + [ts])
            ctx.register_event_time_timer(ts)

    def on_timer(self, ctx, timer):
        pending = self.pending.get(ctx) or []
        due = sorted(t for t in pending if t <= timer.time)
        waiting = [t for t in pending if t > timer.time]
        key = timer.key.decode("utf-8", "replace")
        rules = [
            (start, for_key != EVERY_KEY, max_clicks)
            for (for_key, start), max_clicks in self.rules.entries(ctx)
            if for_key in (key, EVERY_KEY)
        ]
        count = self.count.get(ctx) or 0
        for ts in due:
            count += 1
            ctx.emit_json({"key": key, "ts": ts, "count": count})
            in_force = max((r for r in rules if r[0] <= ts), default=None)
            if in_force is not None and count > in_force[2]:
                ctx.emit_json_to("alerts", {"key": key, "ts": ts, "count": count, "max_clicks": in_force[2]})
        self.count.set(ctx, count)
        if waiting:
            self.pending.set(ctx, waiting)
        else:
            self.pending.clear(ctx)


Operator = weir_guest.export(Rules)
