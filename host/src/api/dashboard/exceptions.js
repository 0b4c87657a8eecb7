// A job's exceptions, as Flink's Exceptions tab shows them: the failure that ended the job, and
// every failure that made it restart, newest first, each with the whole cause (a guest's
// traceback or panic, its last output and backtrace) as the API gives it.
import { get } from "./api.js";
import { jobHeading, jobTabs } from "./jobs.js";
import { fill, h, headline, time } from "./ui.js";

function exception(failure, open) {
  return h(
    "details",
    { class: "exception", open, "data-attempt": failure.attempt },
    h("summary", {}, h("span", { class: "muted" }, `${time(failure.timestamp)} · attempt ${failure.attempt} · `), headline(failure.cause)),
    h("pre", { class: "error-text" }, failure.cause),
  );
}

export async function mount(main, id) {
  const heading = h("div");
  const body = h("div");
  fill(main, heading, jobTabs(id, "Exceptions"), body);
  const refresh = async () => {
    const job = await get(`/v1/jobs/${id}`);
    fill(heading, jobHeading(job, refresh));
    // Keep what the user opened or closed across refreshes.
    const opened = new Map([...body.querySelectorAll("details.exception")].map((d) => [d.dataset.attempt, d.open]));
    const failures = job.failures.slice().reverse();
    fill(
      body,
      job.failure ? [h("h2", {}, "Root exception"), h("pre", { class: "error-text", "data-root": true }, job.failure)] : null,
      h("h2", {}, `History (${failures.length})`),
      failures.length
        ? failures.map((f, i) => exception(f, opened.get(String(f.attempt)) ?? i === 0))
        : h("p", { class: "muted" }, "No failures: the job has not restarted or failed."),
      h("p", { class: "muted" }, "The latest 16 failures are kept. What a guest wrote before it failed is in its cause; the server's log has all of it (weir::guest)."),
    );
  };
  await refresh();
  return refresh;
}
