// The job list and a job's page: its state, operator graph with live rates and backpressure,
// failures, lineage, and the actions on a running job.
import { get, post } from "./api.js";
import { savepointActions } from "./savepoints.js";
import { attempt, badge, bytes, chart, confirmDialog, count, fact, fill, h, headline, ms, rate, seconds, short, table, time, watermark } from "./ui.js";

/** The previous sample of each job's counts, to turn counters into rates. */
const samples = new Map();

/** Per-second rates of `counters` (an object of totals) since the last sample under `key`. */
function rates(key, counters) {
  const now = performance.now();
  const last = samples.get(key);
  samples.set(key, { at: now, counters });
  if (!last) return {};
  const elapsed = (now - last.at) / 1000;
  const result = {};
  for (const [name, value] of Object.entries(counters)) {
    if (elapsed > 0 && last.counters[name] !== undefined) result[name] = Math.max(0, (value - last.counters[name]) / elapsed);
  }
  return result;
}

function uptime(job) {
  const end = job["ended-at"] || Date.now();
  return seconds(Math.max(0, (end - job["submitted-at"]) / 1000));
}

export function jobLink(id, name) {
  return h("a", { href: `#/jobs/${id}` }, name ? `${name} (${short(id)})` : short(id));
}

export async function mountList(main) {
  const body = h("div");
  fill(main, h("h1", {}, "Jobs"), body);
  const refresh = async () => {
    const { jobs } = await get("/v1/jobs");
    const rows = jobs.slice().reverse();
    const throughput = Object.fromEntries(rows.map((j) => [j.id, rates(`list/${j.id}`, { out: j["events-written"] }).out]));
    fill(body, 
      table(
        [
          ["Name", (j) => jobLink(j.id, j.name)],
          ["State", (j) => badge(j.state)],
          ["Submitted", (j) => time(j["submitted-at"])],
          ["Uptime", uptime, { num: true }],
          ["Events written", (j) => count(j["events-written"]), { num: true }],
          ["Throughput", (j) => (j.state === "running" ? rate(throughput[j.id]) : "–"), { num: true }],
          ["Failure", (j) => headline(j.failure)],
        ],
        rows,
        "No jobs yet: start one with `weir run JOB.toml` or submit one to `weir serve`.",
      ),
    );
  };
  await refresh();
  return refresh;
}

/** The tabs of a job's page, `current` marked. */
export function jobTabs(id, current) {
  const tab = (path, label) => h("a", { href: `#/jobs/${id}${path}`, class: current === label && "current" }, label);
  return h(
    "nav",
    { class: "tabs" },
    tab("", "Overview"),
    tab("/exceptions", "Exceptions"),
    tab("/checkpoints", "Checkpoints"),
    tab("/upgrades", "Upgrades"),
  );
}

/** A job's heading: name, state, and what can be done with it. */
export function jobHeading(job, onChange) {
  const running = job.state === "running";
  const cancel = async () => {
    const ok = await confirmDialog("Cancel this job?", h("p", {}, `Job ${job.name} stops now, without a savepoint.`), "Cancel the job");
    if (ok) await attempt(() => post(`/v1/jobs/${job.id}/cancel`), (j) => `job ${job.name} is ${j.state}`);
    onChange();
  };
  return h(
    "div",
    {},
    h("h1", {}, `${job.name} `, badge(job.state)),
    h("div", { class: "muted mono" }, job.id),
    h(
      "div",
      { class: "actions" },
      savepointActions(job, onChange),
      h("button", { class: "danger", disabled: !running && job.state !== "restarting" && job.state !== "created", onclick: cancel }, "Cancel…"),
    ),
  );
}

/** A vertex's events in or out over all the job's runs (attempts, upgrades, rollbacks). */
function total(vertex, way) {
  return vertex[`total-events-${way}`] ?? vertex[`events-${way}`];
}

/** Whether the vertex's counts span more than the current run. */
function runs(vertex) {
  return total(vertex, "in") !== vertex["events-in"] || total(vertex, "out") !== vertex["events-out"];
}

/** A vertex's card; `edgePressure` holds, per input edge, the share of its senders' time spent
 * waiting for room in it (percent). */
function vertexCard(vertex, live, onSelect, selected, edgePressure = []) {
  const busy = vertex.kind === "operator" ? `${Math.min(100, (live.busy || 0) / 10 / vertex.parallelism).toFixed(0)} %` : null;
  const pressure = (live.blocked || 0) / 10 / vertex.parallelism;
  const rows = [
    ["parallelism", vertex.parallelism],
    vertex.kind !== "source" && ["events in", count(total(vertex, "in"))],
    vertex.kind !== "source" && ["in", rate(live.in)],
    ["events out", count(total(vertex, "out"))],
    ["out", rate(live.out)],
    runs(vertex) && ["this run in / out", `${count(vertex["events-in"])} / ${count(vertex["events-out"])}`],
    vertex.kind !== "sink" && ["backpressured", h("span", { class: `pressure ${pressure > 50 ? "high" : ""}` }, `${Math.min(100, pressure).toFixed(0)} %`)],
    busy && ["busy", busy],
    vertex.watermark !== undefined && ["watermark", watermark(vertex.watermark)],
    vertex.kind === "operator" && ["late events", count(vertex["late-events"])],
    vertex.quarantined > 0 && ["quarantined", h("span", { class: "pressure high", "data-quarantined": vertex.quarantined }, count(vertex.quarantined))],
    vertex["chained-into"] && ["chained into", vertex["chained-into"]],
  ].filter(Boolean);
  return h(
    "div",
    {
      class: `vertex ${vertex.kind} ${selected ? "selected" : ""}`,
      "data-uid": vertex.uid,
      title: "Show its subtasks",
      onclick: () => onSelect(vertex.uid),
    },
    h("div", { class: "kind" }, vertex.kind),
    h("div", { class: "title" }, vertex.uid),
    h("dl", {}, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    (vertex.inputs || []).length
      ? h(
          "ul",
          { class: "edges" },
          vertex.inputs.map((i, n) => {
            const pressure = edgePressure[n] || 0;
            return h(
              "li",
              { "data-from": i.from },
              "← ",
              h("span", { class: "from" }, i.from),
              i.output && h("span", { class: "side-output", title: "a side output" }, `.${i.output}`),
              " ",
              h("span", { class: "partitioning" }, i.partitioning.toUpperCase()),
              pressure >= 1 && h("span", { class: `pressure ${pressure > 50 ? "high" : ""}` }, ` · ${Math.min(100, pressure).toFixed(0)} % backpressured`),
            );
          }),
        )
      : null,
  );
}

/** The job's graph in topological order: a column per depth (sources first, each vertex one
 * column right of the deepest vertex it reads), each card listing the edges into it with their
 * partitioning and, for an edge from a side output, its name, as Flink's job graph labels them. Each vertex shows its counts and live rates; a
 * click on one selects it (`onSelect`) for the subtask view. */
function graph(job, onSelect, selected) {
  const byUid = new Map(job.vertices.map((v) => [v.uid, v]));
  const depths = new Map();
  const depth = (v, seen = new Set()) => {
    if (depths.has(v.uid)) return depths.get(v.uid);
    seen.add(v.uid);
    const upstream = (v.inputs || []).map((i) => byUid.get(i.from)).filter((u) => u && !seen.has(u.uid));
    const d = upstream.length ? 1 + Math.max(...upstream.map((u) => depth(u, seen))) : 0;
    depths.set(v.uid, d);
    return d;
  };
  job.vertices.forEach((v) => depth(v));
  const columns = [];
  for (const v of job.vertices) (columns[depths.get(v.uid)] ||= []).push(v);
  const cards = columns
    .filter((c) => c && c.length)
    .map((vertices) =>
      h(
        "div",
        { class: "column" },
        vertices.map((v) => {
          const live = rates(`${job.id}/${v.uid}`, {
            in: v["events-in"],
            out: v["events-out"],
            blocked: v["backpressured-ms"] || 0,
            busy: v["busy-ms"] || 0,
          });
          const edgePressure = (v.inputs || []).map((i) => {
            const sender = byUid.get(i.from);
            const edge = `${job.id}/${v.uid}<-${i.from}${i.output ? `.${i.output}` : ""}`;
            const blocked = rates(edge, { blocked: i["backpressured-ms"] || 0 }).blocked || 0;
            return sender ? blocked / 10 / sender.parallelism : 0;
          });
          return vertexCard(v, live, onSelect, v.uid === selected, edgePressure);
        }),
      ),
    );
  const withArrows = cards.flatMap((c, i) => (i ? [h("div", { class: "arrow" }, "→"), c] : [c]));
  if (!withArrows.length) return h("p", { class: "muted" }, "The job's subtasks are not running.");
  return h("div", { class: "graph" }, withArrows);
}

/** The vertex each job's page shows the subtasks of, by job id. */
const selectedVertex = new Map();
/** Each job's events written over time while its page is open: [time, per second]. */
const written = new Map();

/** The subtasks of `vertex`: counts and live rates, time backpressured and busy, watermark, and
 * their part of the latest completed checkpoint. */
function subtasks(job, vertex, checkpoint) {
  const acks = new Map(((checkpoint && checkpoint.tasks[vertex.uid]) || { subtasks: [] }).subtasks.map((s) => [s.index, s]));
  const rows = vertex.subtasks.map((s, index) => {
    const live = rates(`${job.id}/${vertex.uid}/${index}`, {
      in: s["events-in"],
      out: s["events-out"],
      blocked: s["backpressured-ms"] || 0,
      busy: s["busy-ms"] || 0,
    });
    return { index, s, live, ack: acks.get(index) };
  });
  const percent = (msPerSecond) => (msPerSecond === undefined ? "–" : `${Math.min(100, msPerSecond / 10).toFixed(0)} %`);
  return h(
    "div",
    { "data-subtasks": vertex.uid },
    h("h2", {}, `Subtasks of ${vertex.uid} (${vertex.kind}, parallelism ${vertex.parallelism})`),
    table(
      [
        ["Subtask", (r) => `${r.index + 1}/${vertex.parallelism}`],
        ["Events in", (r) => count(r.s["events-in"]), { num: true }],
        ["In", (r) => rate(r.live.in), { num: true }],
        ["Events out", (r) => count(r.s["events-out"]), { num: true }],
        ["Out", (r) => rate(r.live.out), { num: true }],
        ["Backpressured", (r) => percent(r.live.blocked), { num: true }],
        ["Busy", (r) => (vertex.kind === "operator" ? percent(r.live.busy) : "–"), { num: true }],
        ["Watermark", (r) => watermark(r.s.watermark)],
        ["Late events", (r) => count(r.s["late-events"] || 0), { num: true }],
        ["Quarantined", (r) => count(r.s.quarantined || 0), { num: true }],
        [checkpoint ? `Checkpoint ${checkpoint.id} ack` : "Checkpoint ack", (r) => (r.ack ? time(r.ack["ack-timestamp"]) : "–")],
        ["State size", (r) => (r.ack ? bytes(r.ack["state-size"]) : "–"), { num: true }],
        ["Sync / async", (r) => (r.ack ? `${ms(r.ack["sync-duration-ms"])} / ${ms(r.ack["async-duration-ms"])}` : "–"), { num: true }],
      ],
      rows,
      "Its subtasks are not running.",
    ),
  );
}

/** What each module version of the operators running a canary served, side by side: key groups,
 * events in and out, output rate, time in calls and failed calls. Nothing without a canary. */
function versions(job) {
  const rows = job.vertices.flatMap((v) =>
    (v.versions || []).map((version) => {
      // Its output rate while this page is open, else the API's over its last reading.
      const live = rates(`${job.id}/${v.uid}/${version.role}`, { out: version["events-out"] }).out;
      return { uid: v.uid, live: live ?? version["events-out-per-second"], ...version };
    }),
  );
  if (!rows.length) return null;
  return h(
    "div",
    { "data-versions": true },
    h("h2", {}, "Module versions (canary)"),
    table(
      [
        ["Operator", (r) => r.uid],
        ["Role", (r) => badge(r.role)],
        ["Module", (r) => r.module],
        ["Key groups", (r) => `${r["key-groups"].start}..${r["key-groups"].end}`],
        ["Events in", (r) => count(r["events-in"]), { num: true }],
        ["Events out", (r) => count(r["events-out"]), { num: true }],
        ["Out", (r) => rate(r.live), { num: true }],
        ["Busy", (r) => ms(r["busy-ms"]), { num: true }],
        ["Errors", (r) => count(r.errors), { num: true }],
      ],
      rows,
      "",
    ),
  );
}

/** Where the job came from (the savepoint it started from and the job that took it) and the
 * jobs started from its own savepoints, from the job listing and the savepoint library. */
function lineage(job, jobs, library) {
  const from = job.lineage;
  const taken = from && library.find((s) => s.location === from.savepoint);
  const parent = taken && jobs.find((j) => j.id === taken["job-id"]);
  const mine = new Set(job.savepoints.map((s) => s.location));
  const children = jobs.filter((j) => j.id !== job.id && j.lineage && mine.has(j.lineage.savepoint));
  return h(
    "div",
    {},
    from
      ? h("p", {}, "Started from savepoint ", h("code", {}, from.savepoint), " of job ", parent ? jobLink(parent.id, parent.name) : from.job, ".")
      : h("p", { class: "muted" }, "Started from scratch (no savepoint)."),
    children.length ? h("p", {}, "Jobs started from its savepoints: ", children.map((c, i) => [i ? ", " : "", jobLink(c.id, c.name)])) : null,
  );
}

export async function mountJob(main, id) {
  const heading = h("div");
  const body = h("div");
  fill(main, heading, jobTabs(id, "Overview"), body);
  const refresh = async () => {
    const [job, { jobs }, { savepoints }, checkpoints] = await Promise.all([
      get(`/v1/jobs/${id}`),
      get("/v1/jobs"),
      get("/v1/savepoints"),
      get(`/v1/jobs/${id}/checkpoints`),
    ]);
    fill(heading, jobHeading(job, refresh));
    const sinkEvents = job.vertices.filter((v) => v.kind === "sink").reduce((n, v) => n + total(v, "out"), 0);
    if (!written.has(id)) written.set(id, []);
    const series = written.get(id);
    const perSecond = rates(`${id}/written`, { out: sinkEvents }).out;
    if (perSecond !== undefined) series.push([Date.now(), perSecond]);
    series.splice(0, Math.max(0, series.length - 150));
    const select = (uid) => {
      selectedVertex.set(id, uid);
      refresh();
    };
    const selected = job.vertices.find((v) => v.uid === selectedVertex.get(id));
    fill(body, 
      h(
        "div",
        { class: "facts" },
        fact("State", job.state),
        fact("Uptime", uptime(job)),
        fact("Submitted", time(job["submitted-at"])),
        fact("Restarts", job.attempt),
        fact("Guest traps", job["guest-traps"] ?? 0),
        fact("Events written", count(sinkEvents)),
        fact("Savepoints", job.savepoints.length),
        job["ended-at"] ? fact("Ended", time(job["ended-at"])) : null,
      ),
      job.failure ? h("p", { class: "error-text", "data-failure": true }, headline(job.failure), " ", h("a", { href: `#/jobs/${id}/exceptions` }, "(the whole cause)")) : null,
      h("h2", {}, "Operator graph"),
      graph(job, select, selectedVertex.get(id)),
      selected
        ? subtasks(job, selected, checkpoints.latest.completed)
        : h("p", { class: "muted" }, "Click a vertex to see its subtasks."),
      versions(job),
      h("div", { class: "charts" }, chart("Events written per second, while this page is open", series, rate)),
      h("h2", {}, "Failures"),
      table(
        [
          ["When", (f) => time(f.timestamp)],
          ["Attempt", (f) => f.attempt, { num: true }],
          ["Cause", (f) => h("a", { class: "error-text", href: `#/jobs/${id}/exceptions` }, headline(f.cause))],
        ],
        job.failures.slice().reverse(),
        "No failures.",
      ),
      h("h2", {}, "Lineage"),
      lineage(job, jobs, savepoints),
      h("h2", {}, "Savepoints"),
      table(
        [
          ["Taken", (s) => time(s["taken-at"])],
          ["Location", (s) => h("code", {}, s.location)],
          ["Size", (s) => bytes(s.size), { num: true }],
          ["Stopped the job", (s) => (s.stopped ? "yes" : "no")],
        ],
        job.savepoints.slice().reverse(),
        "None: take one with the button above.",
      ),
      h("details", {}, h("summary", {}, "Job file"), h("pre", {}, job.job)),
    );
  };
  await refresh();
  return refresh;
}
