"""A Python operator with a bug: it counts page views per key and, from the event with
`"page": null` on, adds a string to None (a TypeError of the kind users meet). The job must fail
with the exception and the traceback through this file, not a trap."""
import weir_guest


def path_length(page):
    return len("/" + page)


class Pages:
    @staticmethod
    def describe():
        return weir_guest.Description("pages", "1.0.0").value_state("views", 1)

    def __init__(self, ctx):
        self.views = ctx.value_state("views")

    def process(self, ctx, event):
        n = (self.views.get(ctx) or 0) + 1
        self.views.set(ctx, n)
        page = event.json().get("page")
        print(f"page {page!r}")
        ctx.emit_json({"views": n, "length": path_length(page)})


Operator = weir_guest.export(Pages)
