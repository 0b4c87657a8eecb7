// The dashboard: a hash router over the pages, values refreshed every 2 seconds without
// reloading, and the token asked for when the API wants one (kept for the browser session).
import { ApiError, setToken } from "./api.js";
import * as checkpoints from "./checkpoints.js";
import * as compare from "./compare.js";
import * as exceptions from "./exceptions.js";
import * as jobs from "./jobs.js";
import * as modules from "./modules.js";
import * as savepoints from "./savepoints.js";
import { clearStaleOutcome, fill, h } from "./ui.js";
import * as upgrades from "./upgrades.js";

const REFRESH_MS = 2000;

/** Route patterns to the page that shows them; each page's `mount` returns its refresh. */
const routes = [
  [/^#\/jobs\/([0-9a-f]+)\/checkpoints$/, checkpoints.mount, "jobs"],
  [/^#\/jobs\/([0-9a-f]+)\/upgrades$/, upgrades.mount, "jobs"],
  [/^#\/jobs\/([0-9a-f]+)\/exceptions$/, exceptions.mount, "jobs"],
  [/^#\/jobs\/([0-9a-f]+)$/, jobs.mountJob, "jobs"],
  [/^#\/savepoints$/, savepoints.mount, "savepoints"],
  [/^#\/modules$/, modules.mount, "modules"],
  [/^#\/compare$/, compare.mount, "compare"],
  [/^(#\/jobs)?$/, jobs.mountList, "jobs"],
];

let refresh = null;
let shown = 0;

function askForToken(main, message) {
  const input = h("input", { type: "password", name: "token", placeholder: "the server's token", autocomplete: "off" });
  const form = h(
    "form",
    {
      class: "token",
      onsubmit: (e) => {
        e.preventDefault();
        setToken(input.value.trim());
        show();
      },
    },
    h("h1", {}, "This server needs a token"),
    h("p", { class: "error-text" }, message),
    h("p", { class: "muted" }, "It is the one given to weir with --token or WEIR_TOKEN. It is kept for this browser session only."),
    input,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Use this token")),
  );
  fill(main, form);
}

/** Shows the page the address names. */
async function show() {
  const page = ++shown;
  refresh = null;
  const main = document.getElementById("page");
  const hash = location.hash;
  clearStaleOutcome();
  const [pattern, mount, section] = routes.find(([pattern]) => pattern.test(hash)) || [];
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("current", link.dataset.section === section);
  }
  if (!mount) {
    fill(main, h("h1", {}, "No such page"), h("p", {}, h("a", { href: "#/jobs" }, "Back to the jobs")));
    return;
  }
  try {
    const params = hash.match(pattern).slice(1);
    fill(main, h("p", { class: "muted" }, "Loading…"));
    // Built apart and shown only if it is still the page asked for: a slow page finishing after
    // the user moved on must not cover the newer one.
    const content = h("div");
    const pageRefresh = await mount(content, ...params);
    if (page !== shown) return;
    fill(main, content);
    refresh = pageRefresh || null;
  } catch (e) {
    if (page !== shown) return;
    if (e instanceof ApiError && e.status === 401) askForToken(main, e.message);
    else fill(main, h("h1", {}, "Cannot show this page"), h("p", { class: "error-text" }, e.message));
  }
}

async function tick() {
  const live = document.getElementById("live");
  if (!refresh || document.hidden) return;
  try {
    await refresh();
    live.textContent = `live · ${new Date().toLocaleTimeString("sv-SE")}`;
  } catch (e) {
    live.textContent = `not refreshed: ${e.message}`;
  }
}

window.addEventListener("hashchange", show);
setInterval(tick, REFRESH_MS);
show();
