// Drives the dashboard in Debian's headless Chromium (playwright-core, which downloads no
// browser) as a user would, in one of two flows (FLOW):
// - `serve`: a `weir serve` with a token: gives the token, sees the running job and a vertex's
//   subtasks, reads a failed job's exceptions, watches checkpoints complete on charts with time
//   axes, takes a savepoint from the savepoints page, sees it in the library, forks it into a new
//   job from its job file as written, upgrades the original by uploading a module and rolls it
//   back;
// - `run`: a `weir run`'s one job: runs a shadow beside it and stops it, runs a canary on half
//   its key groups and watches both module versions on the job's page, aborts the canary by
//   rolling back, upgrades it from its upgrades page, and is told, as the API
//   says it, that `weir run` starts no other job;
// - `graph`: a branching job's page: its graph's columns and the edges each vertex lists.
// - `quarantine`: a job whose operator sets events aside: the count on its card, and the edge of
//   the sink reading its quarantine.
// Writes a screenshot of each page into SCREENSHOTS. Run by tests/dashboard.rs; exits non-zero
// with what went wrong, and prints what it did as JSON.
import { strict as assert } from "node:assert";
import { chromium } from "playwright-core";

const { FLOW, WEIR_URL, WEIR_TOKEN, JOB_ID, FAILED_ID, JOB_NAME, SCREENSHOTS, CHROMIUM, COUNT_V2 } = process.env;
const CLOCK = /^\d\d:\d\d:\d\d$/;
const TIMEOUT = 30_000;

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
page.setDefaultTimeout(TIMEOUT);
const errors = [];
page.on("pageerror", (e) => errors.push(e.message));
const shot = (name) => page.screenshot({ path: `${SCREENSHOTS}/${FLOW}-${name}.png`, fullPage: true });

/** Uploads count_v2.wasm for operator `count` on the job's upgrades page and confirms. */
async function upgrade() {
  await page.goto(`${WEIR_URL}/#/jobs/${JOB_ID}/upgrades`);
  await page.setInputFiles('input[name="count-file"]', COUNT_V2);
  await page.locator('[data-action="upgrade"]').click();
  await page.locator("dialog li", { hasText: "count → sha256:" }).waitFor();
  await page.locator("dialog [data-confirm]").click();
  await page.locator('[data-outcome="ok"]', { hasText: "upgraded job" }).waitFor();
  const upgraded = page.locator("tr", { hasText: "count: count 1.0.0" });
  await upgraded.getByText("upgraded").waitFor();
  await upgraded.getByText(/ms$/).waitFor();
}

/**
 * Runs count_v2.wasm as a canary on half of operator `count`'s key groups from the upgrades page,
 * sees both module versions counted on the job's page, and aborts it by rolling the job back to
 * the canary's start.
 */
async function canary() {
  await page.goto(`${WEIR_URL}/#/jobs/${JOB_ID}/upgrades`);
  await page.setInputFiles('input[name="count-file"]', COUNT_V2);
  await page.locator('[data-action="canary"]').click();
  await page.locator('dialog input[name="canary-share"]').fill("50%");
  await page.locator("dialog [data-confirm]").click();
  await page.locator('[data-outcome="ok"]', { hasText: "Run the canary: done" }).waitFor();
  await page.goto(`${WEIR_URL}/#/jobs/${JOB_ID}`);
  const versions = page.locator("[data-versions] tr", { hasText: "count 2.0.0" });
  await versions.getByText("canary").waitFor();
  await versions.getByText("0..64").waitFor();
  await page.locator("[data-versions] tr", { hasText: "count 1.0.0" }).getByText("64..128").waitFor();
  await shot("canary");
  await page.goto(`${WEIR_URL}/#/jobs/${JOB_ID}/upgrades`);
  await page.locator('[data-action="abort-canary"]:not([disabled])').click();
  await page.locator('dialog select[name="abort"]').selectOption("rollback");
  await page.locator("dialog [data-confirm]").click();
  await page.locator('[data-outcome="ok"]', { hasText: "Abort the canary: done" }).waitFor();
  await page.locator("tr", { hasText: "rolled-back" }).waitFor();
}

/**
 * Runs count_v2.wasm beside operator `count` as a shadow from the upgrades page: the shadow runs
 * table shows its lines differing from the live ones (v2 adds a field), then it is stopped.
 */
async function shadow() {
  await page.goto(`${WEIR_URL}/#/jobs/${JOB_ID}/upgrades`);
  await page.setInputFiles('input[name="count-file"]', COUNT_V2);
  await page.locator('[data-action="shadow"]').click();
  await page.locator('[data-outcome="ok"]', { hasText: "shadowing count" }).waitFor();
  const row = page.locator('[data-section="shadows"] tr', { hasText: "count 2.0.0" });
  await row.getByText("running").waitFor();
  // The page refreshes itself: the live output and the shadow's differ in v2's field.
  await page.locator('[data-section="shadows"] code', { hasText: '"v":2' }).first().waitFor();
  await shot("shadow");
  await page.locator('[data-action="stop-shadows"]:not([disabled])').click();
  await row.getByText("stopped: stopped on request").waitFor();
}

async function serve() {
  // Without the token, the dashboard asks for it (and shows the API's answer).
  await page.goto(`${WEIR_URL}/`);
  await page.getByRole("heading", { name: "This server needs a token" }).waitFor();
  await page.getByText("this server needs a token: send").waitFor();
  await page.fill("input[name=token]", "not-the-token");
  await page.click("button[type=submit]");
  await page.getByText("the token is wrong").waitFor();
  await page.fill("input[name=token]", WEIR_TOKEN);
  await page.click("button[type=submit]");

  // The job list shows the running job.
  const row = page.locator("tr", { hasText: JOB_NAME });
  await row.locator(".badge.running").waitFor();
  await shot("jobs");

  // Its page: the operator graph with every vertex and live counts.
  await row.getByRole("link").click();
  await page.waitForURL(`**/#/jobs/${JOB_ID}`);
  for (const uid of ["events", "count", "out"]) await page.locator(`.vertex[data-uid="${uid}"]`).waitFor();
  // Rates need two samples: the page refreshes itself.
  await page.waitForFunction(() => /[0-9.]+ ?[kM]?\/s/.test(document.querySelector('.vertex[data-uid="out"] dl').textContent));
  await shot("job");
  // A vertex's subtasks: counts, rates, time busy, and their part of the latest checkpoint.
  await page.locator('.vertex[data-uid="count"]').click();
  const subtasks = page.locator('[data-subtasks="count"]');
  await subtasks.locator("th", { hasText: /^Checkpoint \d+ ack$/ }).waitFor();
  assert.equal(await subtasks.locator("tbody tr").count(), 2, "one row per subtask");
  await subtasks.locator("tbody tr", { hasText: "2/2" }).locator("td", { hasText: /^\d+(\.\d)? (B|KiB)$/ }).first().waitFor();
  // The throughput chart's time axis reads as clock times.
  await page.waitForFunction(() => document.querySelectorAll(".chart [data-tick]").length > 1);
  for (const tick of await page.locator(".chart [data-tick]").allTextContents()) assert.match(tick, CLOCK);
  await shot("subtasks");

  // A failed job's exceptions: the root cause and each failed attempt, what its guest wrote.
  await page.goto(`${WEIR_URL}/#/jobs/${FAILED_ID}`);
  await page.locator("[data-failure]", { hasText: "gave up on this key" }).getByRole("link").click();
  await page.waitForURL(`**/#/jobs/${FAILED_ID}/exceptions`);
  const root = await page.locator("pre[data-root]").textContent();
  // Why it was not restarted again follows the cause's first line.
  assert.match(
    root,
    /the operator failed: gave up on this key \(not restarted again: the fixed-delay restart strategy \(attempts 1, delay 10ms\) allows no more restarts\)\nthe guest's last output:\n {2}\| looking at key k\d\n {2}\| this key looks wrong$/,
  );
  assert.equal(await page.locator("details.exception").count(), 2, "both failed attempts");
  assert.equal(await page.locator("details.exception[open]").count(), 1, "the newest is open");
  await shot("exceptions");

  // The running job's checkpoints: completed ones appear while the page is open, without a reload.
  await page.goto(`${WEIR_URL}/#/jobs/${JOB_ID}`);
  await page.getByRole("link", { name: "Checkpoints" }).click();
  const completed = page.locator('[data-count="completed"]');
  await completed.waitFor();
  const first = Number((await completed.textContent()).replace(/,/g, ""));
  await page.waitForFunction(
    (before) => Number(document.querySelector('[data-count="completed"]').textContent.replace(/,/g, "")) > before + 1,
    first,
  );
  await page.locator("table", { hasText: "Sync part" }).waitFor();
  await page.locator(".chart polyline").first().waitFor();
  for (const tick of await page.locator(".chart [data-tick]").allTextContents()) assert.match(tick, CLOCK);
  await shot("checkpoints");

  // The savepoints page: take one (confirmed in a dialog), see the outcome and the library row.
  await page.getByRole("link", { name: "Savepoints" }).click();
  await page.waitForURL("**/#/savepoints");
  await page.locator("tr", { hasText: JOB_NAME }).locator('[data-action="savepoint"]').click();
  await page.locator('dialog [data-confirm]').click();
  const stored = page.locator('[data-outcome="ok"]', { hasText: "stored at" });
  await stored.waitFor();
  const location = (await stored.textContent()).split(" stored at ")[1].trim();
  await page.locator(`[data-location="${location}"]`).waitFor();
  await shot("savepoints");

  // Restore it into a new job: a fork beside the running original, named apart.
  const libraryRow = page.locator("tr", { has: page.locator(`[data-location="${location}"]`) });
  await libraryRow.locator('[data-action="restore"]').click();
  await page.check("dialog input[name=fork]");
  const text = await page.inputValue("dialog textarea");
  assert.match(text, new RegExp(`name = "${JOB_NAME}-fork"`), "the fork is named apart");
  assert.match(text, /^# clickstream: events counted per key\n/, "the job file as written, its comment kept");
  await page.locator('dialog [data-confirm]').click();
  await page.locator('[data-outcome="ok"]', { hasText: "started from the savepoint" }).waitFor();
  await page.waitForURL(/#\/jobs\/[0-9a-f]+$/);
  const forkId = page.url().split("/").pop();
  assert.notEqual(forkId, JOB_ID);
  await page.getByText(`${JOB_NAME}-fork`).first().waitFor();
  await page.locator("h1 .badge.running").waitFor();
  await page.getByText("Started from savepoint").waitFor();
  await shot("restored");
  // The outcome stays on the page it was reported on: gone once the user moves on.
  await page.getByRole("link", { name: "Compare" }).click();
  await page.waitForURL("**/#/compare");
  await page.waitForFunction(() => document.getElementById("outcome").children.length === 0);

  // The original's page names the fork among the jobs started from its savepoints.
  await page.goto(`${WEIR_URL}/#/jobs/${JOB_ID}`);
  await page.locator("p", { hasText: "Jobs started from its savepoints" }).getByRole("link", { name: `${JOB_NAME}-fork` }).waitFor();

  // Upgrade the original by uploading count_v2.wasm on its upgrades page, then roll it back.
  await upgrade();
  await shot("upgrades");
  await page.locator('[data-action="rollback"]:not([disabled])').click();
  await page.locator("dialog [data-confirm]").click();
  await page.locator('[data-outcome="ok"]', { hasText: "rolled back job" }).waitFor();
  await page.locator("tr", { hasText: "rolled-back" }).waitFor();

  // The module store lists both modules, the one running with the job that runs it.
  await page.getByRole("link", { name: "Modules" }).click();
  const running = page.locator("tr", { hasText: "1.0.0" }).filter({ has: page.getByRole("link", { name: JOB_ID.slice(0, 8) }) });
  await running.first().waitFor();
  await page.locator("tr", { hasText: "2.0.0" }).waitFor();
  await shot("modules");
  return { savepoint: location, fork: forkId };
}

async function run() {
  await page.goto(`${WEIR_URL}/`);
  await page.locator("tr", { hasText: JOB_NAME }).locator(".badge.running").waitFor();
  await shot("jobs");
  await shadow();
  await canary();
  await upgrade();
  await shot("upgrades");
  // A savepoint, then a restore that `weir run` refuses: the dashboard says what the API said.
  await page.getByRole("link", { name: "Savepoints" }).click();
  await page.locator("tr", { hasText: JOB_NAME }).locator('[data-action="savepoint"]').click();
  await page.locator("dialog [data-confirm]").click();
  await page.locator('[data-outcome="ok"]', { hasText: "stored at" }).waitFor();
  await page.locator('[data-action="restore"]').first().click();
  await page.locator("dialog [data-confirm]").click();
  await page.locator('[data-outcome="error"]', { hasText: "this is `weir run`'s API for one job; submit jobs to `weir serve`" }).waitFor();
  await shot("refused");
  return {};
}

async function graph() {
  await page.goto(`${WEIR_URL}/#/jobs/${JOB_ID}`);
  await page.locator('.vertex[data-uid="counts"] .edges li').waitFor();
  const columns = await page.$$eval(".graph .column", (cs) =>
    cs.map((c) => [...c.querySelectorAll(".vertex")].map((v) => v.dataset.uid)),
  );
  const edges = await page.$$eval(".vertex", (vs) =>
    Object.fromEntries(
      vs.map((v) => [
        v.dataset.uid,
        [...v.querySelectorAll(".edges li")].map(
          (li) => `${li.querySelector(".from").textContent}${li.querySelector(".side-output")?.textContent ?? ""} ${li.querySelector(".partitioning").textContent}`,
        ),
      ]),
    ),
  );
  await shot("job");
  return { columns, edges };
}

async function quarantine() {
  await page.goto(`${WEIR_URL}/#/jobs/${JOB_ID}`);
  const counted = page.locator('.vertex[data-uid="count"] [data-quarantined]');
  await counted.waitFor();
  const quarantined = Number(await counted.getAttribute("data-quarantined"));
  const edge = await page.$eval('.vertex[data-uid="set-aside"] .edges li', (li) =>
    `${li.querySelector(".from").textContent}${li.querySelector(".side-output")?.textContent ?? ""} ${li.querySelector(".partitioning").textContent}`,
  );
  await shot("quarantine");
  return { quarantined, edge };
}

try {
  const flows = { run, serve, graph, quarantine };
  const done = await flows[FLOW]();
  assert.deepEqual(errors, [], "the page raised no script errors");
  console.log(JSON.stringify(done));
} catch (e) {
  await page.screenshot({ path: `${SCREENSHOTS}/${FLOW}-failed.png`, fullPage: true }).catch(() => {});
  console.error(`at ${page.url()}: see ${SCREENSHOTS}/${FLOW}-failed.png`);
  throw e;
} finally {
  await browser.close();
}
