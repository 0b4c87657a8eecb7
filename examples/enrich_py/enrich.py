"""Enriches clicks with the profile their user had when they clicked, in Python: the same
event-time temporal join of two keyed streams as examples/enrich, with the same state layout
(a savepoint of one restores into the other) and identical output lines."""
import bisect

import weir_guest


class Enrich:
    @staticmethod
    def describe():
        return (
            weir_guest.Description("enrich", "1.0.0")
            .value_state("profiles", 1)
            .value_state("pending", 1)
            .input("clicks")
            .input("profiles")
            .side_output("unmatched")
        )

    def __init__(self, ctx):
        # The key's profile versions, [valid from, plan], oldest first; its clicks waiting for
        # the watermark, [time, click], in arrival order (the click as the JSON object it is).
        self.profiles = ctx.value_state("profiles")
        self.pending = ctx.value_state("pending")

    def process(self, ctx, event):
        ts = event.timestamp
        if ts is None:
            raise weir_guest.OperatorError(
                f"an event of '{ctx.input}' without a timestamp: set timestamp-field on its source"
            )
        if ctx.input == "profiles":
            versions = self.profiles.get(ctx) or []
            at = bisect.bisect_right([start for start, _ in versions], ts)
            versions.insert(at, [ts, event.json()["plan"]])
            self.profiles.set(ctx, versions)
        else:
            pending = self.pending.get(ctx) or []
            pending.append([ts, event.json()])
            self.pending.set(ctx, pending)
            ctx.register_event_time_timer(ts)

    def on_timer(self, ctx, timer):
        pending = self.pending.get(ctx) or []
        versions = self.profiles.get(ctx) or []
        starts = [start for start, _ in versions]
        for ts, click in (p for p in pending if p[0] <= timer.time):
            valid = bisect.bisect_right(starts, ts)
            if valid:
                plan = versions[valid - 1][1]
                ctx.emit_json({"ts": ts, "user": click["user"], "page": click["page"], "plan": plan})
            else:
                ctx.emit_json_to("unmatched", click)
        waiting = [p for p in pending if p[0] > timer.time]
        if waiting:
            self.pending.set(ctx, waiting)
        else:
            self.pending.clear(ctx)
        # Versions older than the one valid now are needed by no click to come.
        valid = bisect.bisect_right(starts, timer.time)
        if valid > 1:
            self.profiles.set(ctx, versions[valid - 1 :])


Operator = weir_guest.export(Enrich)
