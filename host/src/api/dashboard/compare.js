// Two jobs' committed outputs compared key by key (what `weir compare` prints): the result of
// a blue/green or A/B trial.
import { get } from "./api.js";
import { attempt, count, fill, h, short, table } from "./ui.js";

export async function mount(main) {
  const { jobs } = await get("/v1/jobs");
  const picker = (name) =>
    h("select", { name }, jobs.slice().reverse().map((j) => h("option", { value: j.id }, `${j.name} (${short(j.id)}, ${j.state})`)));
  const [a, b] = [picker("a"), picker("b")];
  if (jobs.length > 1) b.selectedIndex = 1;
  const result = h("div");
  const run = async () => {
    const query = new URLSearchParams({ a: a.value, b: b.value });
    const comparison = await attempt(() => get(`/v1/compare?${query}`), (c) => `${c["matching-keys"]} keys match, ${c["differing-keys"]} differ`);
    if (!comparison) return;
    fill(result, 
      h("p", {}, `${count(comparison["matching-keys"])} keys match, ${count(comparison["differing-keys"])} differ.`),
      comparison.since
        ? h("p", { class: "muted", "data-since": true }, "From savepoint ", h("code", {}, comparison.since), " on, where the fork started: output committed before it is left out.")
        : null,
      table(
        [
          ["Key", (d) => d.key],
          ["Lines", (d) => `${d.lines[0]} / ${d.lines[1]}`, { num: true }],
          ["First difference (A)", (d) => h("code", {}, d.first[0] ?? "(nothing)")],
          ["First difference (B)", (d) => h("code", {}, d.first[1] ?? "(nothing)")],
        ],
        comparison.differences,
        "The outputs are the same.",
      ),
    );
  };
  fill(main, 
    h("h1", {}, "Compare two jobs"),
    h("p", { class: "muted" }, "The committed output of each job's file sink, key by key."),
    h("div", { class: "actions" }, "A ", a, " B ", b, h("button", { onclick: run, "data-action": "compare" }, "Compare")),
    result,
  );
}
