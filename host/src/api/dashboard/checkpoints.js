// A job's checkpoints: counts, the latest completed one with its per-operator parts, the recent
// history, and charts of duration and size over time.
import { get } from "./api.js";
import { jobHeading, jobTabs } from "./jobs.js";
import { bytes, chart, count, fact, fill, h, ms, table, time } from "./ui.js";

/** Every checkpoint seen while the page is open, by id: the API keeps the latest ten. */
const seen = new Map();

function operators(checkpoint) {
  const tasks = Object.entries(checkpoint.tasks || {});
  return table(
    [
      ["Operator", ([uid]) => uid],
      ["Acknowledged", ([, t]) => `${t["num-acknowledged-subtasks"]}`, { num: true }],
      ["State size", ([, t]) => bytes(t["state-size"]), { num: true }],
      ["Uploaded", ([, t]) => bytes(t["checkpointed-size"]), { num: true }],
      ["Alignment", ([, t]) => ms(t["alignment-duration-ms"]), { num: true }],
      ["Sync part", ([, t]) => ms(t["sync-duration-ms"]), { num: true }],
      ["Async part", ([, t]) => ms(t["async-duration-ms"]), { num: true }],
    ],
    tasks,
  );
}

export async function mount(main, id) {
  const heading = h("div");
  const body = h("div");
  fill(main, heading, jobTabs(id, "Checkpoints"), body);
  const refresh = async () => {
    const [job, stats] = await Promise.all([get(`/v1/jobs/${id}`), get(`/v1/jobs/${id}/checkpoints`)]);
    fill(heading, jobHeading(job, refresh));
    if (!seen.has(id)) seen.set(id, new Map());
    const mine = seen.get(id);
    for (const c of stats.history) if (c.status === "completed") mine.set(c.id, c);
    const series = [...mine.values()].sort((a, b) => a.id - b.id).slice(-100);
    const { counts, latest } = stats;
    const last = latest.completed;
    fill(body, 
      h(
        "div",
        { class: "facts" },
        fact("Completed", h("span", { "data-count": "completed" }, count(counts.completed))),
        fact("Failed", count(counts.failed)),
        fact("In progress", count(counts["in-progress"])),
        fact("Restored", count(counts.restored)),
        last ? fact("Latest duration", ms(last["end-to-end-duration-ms"])) : null,
        last ? fact("Latest size (full)", bytes(last["state-size"])) : null,
        last ? fact("Latest uploaded (incremental)", bytes(last["checkpointed-size"])) : null,
        last ? fact("Latest alignment", ms(last["alignment-duration-ms"])) : null,
      ),
      latest.restored
        ? h("p", {}, `Restored from ${latest.restored["is-savepoint"] ? "savepoint" : "checkpoint"} ${latest.restored.id} (`, h("code", {}, latest.restored["external-path"] || ""), `) at ${time(latest.restored["restore-timestamp"])}.`)
        : null,
      latest.failed ? h("p", { class: "error-text" }, `Checkpoint ${latest.failed.id} failed: ${latest.failed["failure-message"] || ""}`) : null,
      h(
        "div",
        { class: "charts" },
        chart("Duration (end to end), by trigger time", series.map((c) => [c["trigger-timestamp"], c["end-to-end-duration-ms"]]), ms),
        chart("Size (full state), by trigger time", series.map((c) => [c["trigger-timestamp"], c["state-size"]]), bytes),
      ),
      h("h2", {}, "Latest checkpoints"),
      table(
        [
          ["Id", (c) => c.id, { num: true }],
          ["Status", (c) => c.status],
          ["Triggered", (c) => time(c["trigger-timestamp"])],
          ["Duration", (c) => ms(c["end-to-end-duration-ms"]), { num: true }],
          ["State size", (c) => bytes(c["state-size"]), { num: true }],
          ["Uploaded", (c) => bytes(c["checkpointed-size"]), { num: true }],
          ["Alignment", (c) => ms(c["alignment-duration-ms"]), { num: true }],
          ["Subtasks", (c) => `${c["num-acknowledged-subtasks"]}/${c["num-subtasks"]}`, { num: true }],
        ],
        stats.history,
        "No checkpoints yet (is checkpointing on in the job file?).",
      ),
      last ? [h("h2", {}, `Per operator, checkpoint ${last.id}`), operators(last)] : null,
    );
  };
  await refresh();
  return refresh;
}
