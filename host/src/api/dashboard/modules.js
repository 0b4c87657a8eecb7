// The module store: each module's name, version, declared states and the jobs running it, and
// an upload.
import { call, get } from "./api.js";
import { attempt, bytes, fill, h, short, table, time } from "./ui.js";

function states(module) {
  return module.states.map((s) => h("div", {}, `${s.name} (${s.kind}${s.ttl ? `, ttl ${s.ttl}` : ""})`));
}

export async function mount(main) {
  const file = h("input", { type: "file", accept: ".wasm", name: "module" });
  const list = h("div");
  const refresh = async () => {
    const { modules } = await get("/v1/modules");
    fill(list, 
      table(
        [
          ["Name", (m) => m.name],
          ["Version", (m) => m.version],
          ["SHA-256", (m) => h("code", { title: m.sha256 }, m.sha256.slice(0, 16))],
          ["States", states],
          ["Size", (m) => bytes(m.size), { num: true }],
          ["Uploaded", (m) => time(m["uploaded-at"])],
          ["Jobs running it", (m) => (m.jobs || []).map((id) => h("div", {}, h("a", { href: `#/jobs/${id}` }, short(id))))],
        ],
        modules.slice().reverse(),
        "No modules yet.",
      ),
    );
  };
  const upload = async () => {
    if (!file.files.length) return;
    const bytes = new Uint8Array(await file.files[0].arrayBuffer());
    await attempt(() => call("POST", "/v1/modules", bytes), (m) => `stored ${m.name} ${m.version} as sha256:${m.sha256}`);
    await refresh();
  };
  fill(main, 
    h("h1", {}, "Modules"),
    h("div", { class: "actions" }, file, h("button", { onclick: upload, "data-action": "upload" }, "Upload")),
    list,
  );
  await refresh();
  return refresh;
}
