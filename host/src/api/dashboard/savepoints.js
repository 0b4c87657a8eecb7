// The savepoint library: every savepoint the server's jobs took, with trigger, stop with a
// savepoint, restore or fork into a new job, and dispose; each asks first and reports how it went.
import { awaitRequest, call, get, post } from "./api.js";
import { attempt, badge, bytes, confirmDialog, fill, h, outcome, short, table, time } from "./ui.js";

/** What each reason a savepoint was taken for reads as. */
const REASONS = {
  user: "asked for",
  stop: "stopped the job",
  upgrade: "before an upgrade",
  rollback: "before a rollback",
};

/** Asks job `job` for a savepoint (stopping it with `stop`) and waits until it is stored. */
async function takeSavepoint(job, stop, drain, onChange) {
  const path = `/v1/jobs/${job.id}/${stop ? "stop" : "savepoints"}`;
  await attempt(
    () =>
      awaitRequest({
        path,
        body: { drain },
        statusPath: (request) => `/v1/jobs/${job.id}/savepoints/${request}`,
        expected: "completed",
        failed: (status) => `the savepoint of job ${job.name} failed: ${status.cause}`,
        accepted: onChange,
      }),
    (status) => `${stop ? "stopped job " + job.name + " with a savepoint" : "savepoint of job " + job.name + " stored"} at ${status.location}`,
  );
  onChange();
}

/** The savepoint buttons of a job: take one, or stop the job with one. */
export function savepointActions(job, onChange) {
  const running = job.state === "running";
  const trigger = async () => {
    const ok = await confirmDialog(
      "Take a savepoint?",
      h("p", {}, `Job ${job.name} keeps running; its state goes into a canonical savepoint in its savepoint directory.`),
      "Take the savepoint",
    );
    if (ok) await takeSavepoint(job, false, false, onChange);
  };
  const stop = async () => {
    const drain = h("input", { type: "checkbox", name: "drain" });
    const body = h(
      "div",
      {},
      h("p", {}, `Job ${job.name} stops at its savepoint: sources stop at its barrier and sinks commit.`),
      h("label", {}, drain, "Drain: fire every event-time timer and emit every window first (--drain)"),
    );
    if (await confirmDialog("Stop the job with a savepoint?", body, "Stop with savepoint")) {
      await takeSavepoint(job, true, drain.checked, onChange);
    }
  };
  return [
    h("button", { disabled: !running, onclick: trigger, "data-action": "savepoint" }, "Savepoint…"),
    h("button", { class: "secondary", disabled: !running, onclick: stop, "data-action": "stop" }, "Stop with savepoint…"),
  ];
}

/** Gives the job file's `name` a suffix (a fork needs a name of its own). */
function renamed(text, suffix) {
  return text.replace(/^(\s*name\s*=\s*")([^"]*)(")/m, (_, a, name, b) => `${a}${name}${suffix}${b}`);
}

async function restore(savepoint) {
  const original = await get(`/v1/jobs/${savepoint["job-id"]}`);
  const text = h("textarea", { name: "job", spellcheck: "false" });
  text.value = original.job;
  const fork = h("input", {
    type: "checkbox",
    name: "fork",
    onchange: () => {
      text.value = fork.checked ? renamed(text.value, "-fork") : original.job;
    },
  });
  const allow = h("input", { type: "checkbox", name: "allow-non-restored-state" });
  const body = h(
    "div",
    {},
    h("p", {}, "A new job starts from savepoint ", h("code", {}, savepoint.location), ". Its job file (edit it to change modules, parallelism or sinks):"),
    text,
    h("p", {}, h("label", {}, fork, "Fork: a second job beside the original (it needs a name and a sink of its own)")),
    h("p", {}, h("label", {}, allow, "Allow non-restored state (state of operators the job no longer has is dropped)")),
  );
  if (!(await confirmDialog("Start a job from this savepoint?", body, "Start the job"))) return;
  const query = new URLSearchParams({ "from-savepoint": savepoint.location });
  if (fork.checked) query.set("fork", "true");
  if (allow.checked) query.set("allow-non-restored-state", "true");
  try {
    const started = await post(`/v1/jobs?${query}`, text.value);
    // Reported on the new job's page, where it stays until the user moves on.
    location.hash = `#/jobs/${started.id}`;
    outcome(`job ${started.id} started from the savepoint`, "ok");
  } catch (e) {
    outcome(e.message, "error");
  }
}

async function dispose(savepoint, onChange) {
  const body = h("p", {}, "Its files are deleted: ", h("code", {}, savepoint.location), ". No job can start from it afterwards.");
  if (!(await confirmDialog("Dispose of this savepoint?", body, "Dispose"))) return;
  const query = new URLSearchParams({ location: savepoint.location });
  await attempt(() => call("DELETE", `/v1/savepoints?${query}`), () => `disposed of savepoint ${savepoint.location}`);
  onChange();
}

export async function mount(main) {
  const jobsArea = h("div");
  const library = h("div");
  fill(main, h("h1", {}, "Savepoints"), h("h2", {}, "Running jobs"), jobsArea, h("h2", {}, "Library"), library);
  const refresh = async () => {
    const [{ jobs }, { savepoints }] = await Promise.all([get("/v1/jobs"), get("/v1/savepoints")]);
    const running = jobs.filter((j) => j.state === "running");
    fill(jobsArea, 
      table(
        [
          ["Job", (j) => h("a", { href: `#/jobs/${j.id}` }, `${j.name} (${short(j.id)})`)],
          ["State", (j) => badge(j.state)],
          ["", (j) => h("div", { class: "actions" }, savepointActions(j, refresh))],
        ],
        running,
        "No job is running.",
      ),
    );
    fill(library, 
      table(
        [
          ["Job", (s) => h("a", { href: `#/jobs/${s["job-id"]}` }, `${s["job-name"]} (${short(s["job-id"])})`)],
          ["Taken", (s) => time(s["taken-at"])],
          ["Location", (s) => h("code", { "data-location": s.location }, s.location)],
          ["Size", (s) => bytes(s.size), { num: true }],
          ["Format", (s) => `${s.format || "canonical"} v${s["format-version"] || "?"}`],
          ["Modules", (s) => s.operators.map(([uid, code]) => h("div", {}, `${uid}: ${code}`))],
          ["Why", (s) => h("span", { "data-reason": s.reason }, REASONS[s.reason] || s.reason)],
          ["Forks", (s) => (s.forks || []).map((id) => h("div", {}, h("a", { href: `#/jobs/${id}` }, short(id))))],
          [
            "",
            (s) =>
              h(
                "div",
                { class: "actions" },
                h("button", { onclick: () => restore(s).catch((e) => outcome(e.message, "error")), "data-action": "restore" }, "Restore…"),
                h("button", { class: "danger", onclick: () => dispose(s, refresh), "data-action": "dispose" }, "Dispose…"),
              ),
          ],
        ],
        savepoints.slice().reverse(),
        "No savepoints yet.",
      ),
    );
  };
  await refresh();
  return refresh;
}
