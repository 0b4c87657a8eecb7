// A job's upgrades: the code it ran over time (with each upgrade's pause, the modules that
// changed and rollbacks), an upgrade, a canary or a shadow run started from a stored or uploaded
// module, the shadow runs side by side with the live modules, a canary's steps and a rollback.
import { awaitRequest, call, get, post } from "./api.js";
import { jobHeading, jobTabs } from "./jobs.js";
import { attempt, bytes, confirmDialog, count, fill, h, ms, outcome, table, time } from "./ui.js";

/** What changed from `before` to `entry`: operator uid, old code, new code. */
function changes(before, entry) {
  const old = new Map(before ? before.modules : []);
  return entry.modules.filter(([uid, code]) => old.get(uid) !== code).map(([uid, code]) => [uid, old.get(uid), code]);
}

function history(job) {
  const rows = job.history.map((entry, i) => ({ entry, changed: changes(job.history[i - 1], entry) })).reverse();
  return table(
    [
      ["When", ({ entry }) => time(entry.timestamp)],
      ["What", ({ entry }) => entry.event],
      [
        "Code",
        ({ entry, changed }) =>
          entry.event === "started"
            ? entry.modules.map(([uid, code]) => h("div", {}, `${uid}: ${code}`))
            : changed.map(([uid, from, to]) => h("div", {}, `${uid}: ${from || "–"} → ${to}`)),
      ],
      ["Pause", ({ entry }) => (entry["pause-ms"] !== undefined ? ms(entry["pause-ms"]) : "–"), { num: true }],
      ["Savepoint", ({ entry }) => (entry.savepoint ? h("code", {}, entry.savepoint) : "–")],
      ["Cause", ({ entry }) => entry.cause || ""],
    ],
    rows,
  );
}

/** Uploads the file chosen in `input` to the module store; resolves to its `sha256:` reference. */
async function upload(input) {
  const file = input.files[0];
  const bytes = new Uint8Array(await file.arrayBuffer());
  const module = await call("POST", "/v1/modules", bytes);
  return `sha256:${module.sha256}`;
}

/** The job's shadow runs beside its live modules: lines compared, memory, the first differences. */
function shadows(job) {
  const runs = job.shadows || [];
  const rows = table(
    [
      ["Operator", (r) => r.uid],
      ["Shadow module", (r) => r.module],
      ["Status", (r) => (r.status === "stopped" ? `stopped: ${r["stopped-because"] || ""}` : r.status)],
      ["Equal", (r) => count(r.equal), { num: true }],
      ["Differing", (r) => count(r.differing), { num: true }],
      ["Missing", (r) => count(r.missing), { num: true }],
      ["Extra", (r) => count(r.extra), { num: true }],
      ["Memory", (r) => `${bytes(r["memory-bytes"])} of ${bytes(r["memory-limit"])}`, { num: true }],
    ],
    runs,
    "no shadow runs: choose modules above and press Shadow… to run them beside the live ones",
  );
  const differences = runs.flatMap((r) => r.differences.map((d) => ({ uid: r.uid, ...d })));
  const sample = differences.length
    ? table(
        [
          ["Operator", (d) => d.uid],
          ["Key", (d) => d.key || d.output],
          ["Live", (d) => h("code", {}, d.live ?? "(nothing)")],
          ["Shadow", (d) => h("code", {}, d.shadow ?? "(nothing)")],
        ],
        differences,
      )
    : "";
  return h("div", { "data-section": "shadows" }, rows, sample);
}

function upgradeForm(job, modules, onChange) {
  const current = job.history.length ? job.history[job.history.length - 1].modules : [];
  const pickers = current.map(([uid, code]) => {
    const select = h(
      "select",
      { name: uid },
      h("option", { value: "" }, `keep ${code}`),
      modules.map((m) => h("option", { value: `sha256:${m.sha256}` }, `${m.name} ${m.version} (${m.sha256.slice(0, 12)})`)),
    );
    const file = h("input", { type: "file", accept: ".wasm", name: `${uid}-file` });
    return { uid, select, file, row: h("tr", {}, h("td", {}, uid), h("td", {}, select), h("td", {}, "or upload ", file)) };
  });
  /** The chosen module per operator, uploaded where a file was chosen; null when none is. */
  const chosen = async () => {
    const operators = {};
    try {
      for (const p of pickers) {
        if (p.file.files.length) operators[p.uid] = await upload(p.file);
        else if (p.select.value) operators[p.uid] = p.select.value;
      }
    } catch (e) {
      outcome(`the module was not uploaded: ${e.message}`, "error");
      return null;
    }
    if (!Object.keys(operators).length) {
      outcome("choose a module for at least one operator", "error");
      return null;
    }
    return operators;
  };
  const shadow = async () => {
    const operators = await chosen();
    if (!operators) return;
    await attempt(
      () => post(`/v1/jobs/${job.id}/shadow`, { operators }),
      () => `shadowing ${Object.keys(operators).join(", ")}: the shadow's output is compared with the live output and reaches no sink`,
    );
    onChange();
  };
  const stopShadows = async () => {
    await attempt(() => call("DELETE", `/v1/jobs/${job.id}/shadow`), () => "the shadow runs stopped");
    onChange();
  };
  const start = async () => {
    const operators = await chosen();
    if (!operators) return;
    const listed = h("ul", {}, Object.entries(operators).map(([uid, m]) => h("li", {}, `${uid} → ${m}`)));
    const body = h("div", {}, h("p", {}, `Job ${job.name} stops at a savepoint and goes on with:`), listed);
    if (!(await confirmDialog("Upgrade the job?", body, "Upgrade"))) return;
    await attempt(
      () =>
        awaitRequest({
          path: `/v1/jobs/${job.id}/upgrade`,
          body: { operators },
          statusPath: (request) => `/v1/jobs/${job.id}/upgrades/${request}`,
          expected: "completed",
          failed: (status) => `the upgrade ${status.status}: ${status.cause}`,
          accepted: onChange,
        }),
      (s) => `upgraded job ${job.name}: paused ${ms(s["pause-ms"])}; rollback savepoint ${s.savepoint}`,
    );
    onChange();
  };
  /** Carries out a canary step (`step`: the request's fields), confirmed with `body` first. */
  const canaryStep = async (title, body, button, step) => {
    if (!(await confirmDialog(title, body, button))) return;
    await attempt(
      () =>
        awaitRequest({
          path: `/v1/jobs/${job.id}/upgrade`,
          body: step(),
          statusPath: (request) => `/v1/jobs/${job.id}/upgrades/${request}`,
          expected: step().abort === "rollback" ? "rolled-back" : "completed",
          failed: (status) => `the canary step ${status.status}: ${status.cause}`,
          accepted: onChange,
        }),
      (s) => `${title.replace("?", "")}: done${s["pause-ms"] !== undefined ? `, paused ${ms(s["pause-ms"])}` : ""}`,
    );
    onChange();
  };
  const share = h("input", { name: "canary-share", value: "10%", size: 6 });
  const canary = async () => {
    const operators = canaryRunning ? {} : await chosen();
    if (!operators) return;
    const body = h("div", {}, h("p", {}, canaryRunning ? "The running canary serves this share of the key groups:" : "The chosen modules serve this share of their operators' key groups beside the old ones:"), share);
    await canaryStep("Run the canary?", body, "Run the canary", () => ({ operators, canary: share.value }));
  };
  const promote = () =>
    canaryStep("Promote the canary?", h("p", {}, "Its module takes over every key group."), "Promote", () => ({ promote: true }));
  const how = h("select", { name: "abort" }, h("option", { value: "hand-back" }, "hand back its key groups with their state"), h("option", { value: "rollback" }, "roll the job back to the canary's start"));
  const abort = () =>
    canaryStep("Abort the canary?", h("div", {}, h("p", {}, "Its key groups go back to the old module:"), how), "Abort", () => ({ abort: how.value }));
  const rollback = async () => {
    const body = h("p", {}, `Job ${job.name} goes back to the modules it ran before its last upgrade, from the savepoint taken before the swap.`);
    if (!(await confirmDialog("Roll back the last upgrade?", body, "Roll back"))) return;
    await attempt(
      () =>
        awaitRequest({
          path: `/v1/jobs/${job.id}/rollback`,
          statusPath: (request) => `/v1/jobs/${job.id}/upgrades/${request}`,
          expected: "rolled-back",
          failed: (status) => `the rollback failed: ${status.cause}`,
        }),
      () => `rolled back job ${job.name}`,
    );
    onChange();
  };
  const running = job.state === "running";
  const canaryRunning = job.vertices.some((v) => (v.versions || []).length);
  return h(
    "div",
    {},
    h("table", {}, h("tbody", {}, pickers.map((p) => p.row))),
    h(
      "div",
      { class: "actions" },
      h("button", { disabled: !running, onclick: start, "data-action": "upgrade" }, "Upgrade…"),
      h("button", { class: "secondary", disabled: !running, onclick: canary, "data-action": "canary" }, "Canary…"),
      h("button", { class: "secondary", disabled: !running || !canaryRunning, onclick: promote, "data-action": "promote" }, "Promote canary"),
      h("button", { class: "secondary", disabled: !running || !canaryRunning, onclick: abort, "data-action": "abort-canary" }, "Abort canary…"),
      h("button", { class: "secondary", disabled: !running, onclick: shadow, "data-action": "shadow" }, "Shadow…"),
      h("button", { class: "secondary", disabled: !(job.shadows || []).some((r) => r.status === "running"), onclick: stopShadows, "data-action": "stop-shadows" }, "Stop shadows"),
      h("button", { class: "secondary", disabled: !running || !job["rollback-point"], onclick: rollback, "data-action": "rollback" }, "Roll back…"),
    ),
  );
}

export async function mount(main, id) {
  const heading = h("div");
  const form = h("div");
  const side = h("div");
  const body = h("div");
  fill(main, heading, jobTabs(id, "Upgrades"), h("h2", {}, "Upgrade"), form, h("h2", {}, "Shadow runs"), side, h("h2", {}, "History"), body);
  const modules = await get("/v1/modules").then((m) => m.modules, () => []);
  let state = null;
  const refresh = async () => {
    const job = await get(`/v1/jobs/${id}`);
    fill(heading, jobHeading(job, refresh));
    // The form keeps what is chosen in it: it is built again only when the job's code or state changes.
    const shadowing = (job.shadows || []).some((r) => r.status === "running");
    const canaryRunning = job.vertices.some((v) => (v.versions || []).length);
    const shape = JSON.stringify([job.state, job.history.length, Boolean(job["rollback-point"]), shadowing, canaryRunning]);
    if (shape !== state) {
      state = shape;
      fill(form, upgradeForm(job, modules, refresh));
    }
    fill(side, shadows(job));
    fill(body, history(job));
  };
  await refresh();
  return refresh;
}
