"""Tumbling event-time window count, in Python: the same operator as examples/window_count, with
the same state layout and identical output lines."""
import bisect
import re

import weir_guest

_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "min": 60_000, "h": 3_600_000}


def _millis(text):
    """Milliseconds in "250ms", "10s", "5m" or "1h"; None otherwise."""
    match = re.fullmatch(r"(\d+)\s*(ms|s|min|m|h)", text)
    if not match:
        return None
    ms = int(match.group(1)) * _UNITS[match.group(2)]
    return ms if 0 < ms < 2**63 else None


class WindowCount:
    @staticmethod
    def describe():
        return weir_guest.Description("window_count", "1.0.0").value_state("windows", 1)

    def __init__(self, ctx):
        size = ctx.config.get("size", "")
        self.size = _millis(size)
        if self.size is None:
            raise weir_guest.OperatorError(f'size "{size}" is not a duration such as "10s" or "500ms"')
        # The key's open windows: [start, count] pairs in start order (as the Rust version).
        self.windows = ctx.value_state("windows")

    def process(self, ctx, event):
        if event.timestamp is None:
            raise weir_guest.OperatorError(
                "an event without a timestamp: window_count needs event time (timestamp-field on the source)"
            )
        start = event.timestamp - event.timestamp % self.size
        last = start + self.size - 1
        if ctx.watermark is not None and last <= ctx.watermark:
            return  # its window has been emitted: late
        windows = self.windows.get(ctx) or []
        i = bisect.bisect_left([s for s, _ in windows], start)
        if i < len(windows) and windows[i][0] == start:
            windows[i][1] += 1
        else:
            windows.insert(i, [start, 1])
            ctx.register_event_time_timer(last)
        self.windows.set(ctx, windows)

    def on_timer(self, ctx, timer):
        start = timer.time + 1 - self.size
        windows = self.windows.get(ctx) or []
        found = [i for i, (s, _) in enumerate(windows) if s == start]
        if not found:
            return
        _, count = windows.pop(found[0])
        if windows:
            self.windows.set(ctx, windows)
        else:
            self.windows.clear(ctx)
        key = timer.key.decode("utf-8", "replace")
        ctx.emit_json({"key": key, "start": start, "end": start + self.size, "count": count})


Operator = weir_guest.export(WindowCount)
