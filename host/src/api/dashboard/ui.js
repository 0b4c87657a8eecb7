// Small DOM and formatting helpers shared by the pages.

/** Children as the DOM takes them: arrays flattened, absent ones (null, undefined, false) left out. */
function nodes(children) {
  return children
    .flat(Infinity)
    .filter((child) => child !== undefined && child !== null && child !== false)
    .map((child) => (child instanceof Node ? child : String(child)));
}

/** Builds an element: h("td", {class: "num"}, "12"); children may be strings, nodes or arrays. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, value);
  }
  element.append(...nodes(children));
  return element;
}

/** Replaces what `element` holds with `children` (as `h` takes them). */
export function fill(element, ...children) {
  element.replaceChildren(...nodes(children));
}

/** A table: `columns` are [heading, cell(row), {num}] and `rows` the data; `empty` when none. */
export function table(columns, rows, empty = "none yet") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map(([title, , o = {}]) => h("th", { class: o.num && "num" }, title)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell, o = {}]) => h("td", { class: o.num && "num" }, cell(row)))))),
  );
}

export function badge(state) {
  return h("span", { class: `badge ${state}` }, state);
}

export function fact(label, value) {
  return h("div", { class: "fact" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
}

export function bytes(n) {
  if (n === undefined || n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function ms(n) {
  if (n === undefined || n === null) return "–";
  if (n < 1000) return `${n < 10 ? n.toFixed(1) : Math.round(n)} ms`;
  return seconds(n / 1000);
}

export function seconds(s) {
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function count(n) {
  return n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US");
}

export function rate(perSecond) {
  if (perSecond === undefined || perSecond === null || Number.isNaN(perSecond)) return "–";
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(2)} M/s`;
  if (perSecond >= 1e3) return `${(perSecond / 1e3).toFixed(1)} k/s`;
  return `${Math.round(perSecond)}/s`;
}

export function time(epochMs) {
  return epochMs ? new Date(epochMs).toLocaleString("sv-SE") : "–";
}

/** The first line of a failure's cause: what lists show of it. */
export function headline(cause) {
  return (cause || "").split("\n")[0];
}

export function short(id) {
  return id ? id.slice(0, 8) : "";
}

/** Event time in milliseconds; the end of time shown as such. */
export function watermark(w) {
  if (w === undefined || w === null) return "–";
  if (w >= 9223372036854775000) return "end of time";
  return new Date(w).toISOString().replace("T", " ").replace("Z", "");
}

/**
 * Reports the outcome of an action at the top of the page, until the user goes to another page
 * (an outcome reported right after a move to a new page stays on it).
 */
export function outcome(message, kind = "ok") {
  const area = document.getElementById("outcome");
  area.dataset.page = location.hash;
  area.replaceChildren(h("div", { class: kind, "data-outcome": kind }, message));
}

/** Clears an outcome reported on another page than the one shown now. */
export function clearStaleOutcome() {
  const area = document.getElementById("outcome");
  if (area.dataset.page !== location.hash) area.replaceChildren();
}

/** Runs `action`, reporting what it resolves to, or the error the API stated. */
export async function attempt(action, describe) {
  try {
    const result = await action();
    outcome(describe(result), "ok");
    return result;
  } catch (e) {
    outcome(e.message, "error");
    return undefined;
  }
}

/**
 * Asks for confirmation in a modal dialog. `body` holds any inputs; resolves to true when the
 * user confirms, false when they cancel.
 */
export function confirmDialog(title, body, confirmLabel) {
  const dialog = document.getElementById("dialog");
  return new Promise((resolve) => {
    const close = (answer) => {
      dialog.close();
      resolve(answer);
    };
    dialog.replaceChildren(
      h("h2", {}, title),
      body,
      h(
        "div",
        { class: "buttons" },
        h("button", { class: "secondary", onclick: () => close(false) }, "Cancel"),
        h("button", { "data-confirm": true, onclick: () => close(true) }, confirmLabel),
      ),
    );
    dialog.onclose = () => resolve(false);
    dialog.showModal();
  });
}

/** A clock time (hours, minutes, seconds) for a chart's time axis. */
function clock(epochMs) {
  return new Date(epochMs).toLocaleTimeString("sv-SE");
}

/**
 * A line chart of `points` ([time in ms since the epoch, y]) as SVG: `format` labels the y axis,
 * the x axis shows the time of the first, middle and last point.
 */
export function chart(title, points, format) {
  const width = 600;
  const height = 170;
  const pad = { left: 70, right: 14, top: 10, bottom: 30 };
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const add = (tag, attributes, text) => {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  const label = { "font-size": 11, fill: "#5b6678" };
  if (points.length) {
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    const y1 = Math.max(...ys) || 1;
    const x = (v) => pad.left + ((v - x0) / (x1 - x0 || 1)) * (width - pad.left - pad.right);
    const y = (v) => height - pad.bottom - (v / y1) * (height - pad.top - pad.bottom);
    add("line", { x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0), stroke: "#d8dde6" });
    add("line", { x1: pad.left, y1: y(0), x2: pad.left, y2: y(y1), stroke: "#d8dde6" });
    add("text", { x: pad.left - 6, y: y(y1) + 4, "text-anchor": "end", ...label }, format(y1));
    add("text", { x: pad.left - 6, y: y(0), "text-anchor": "end", ...label }, format(0));
    const ticks = x1 > x0 ? [[x0, "start"], [(x0 + x1) / 2, "middle"], [x1, "end"]] : [[x0, "start"]];
    for (const [at, anchor] of ticks) {
      add("line", { x1: x(at), y1: y(0), x2: x(at), y2: y(0) + 4, stroke: "#5b6678" });
      add("text", { x: x(at), y: height - 8, "text-anchor": anchor, "data-tick": true, ...label }, clock(at));
    }
    add("polyline", {
      points: points.map(([a, b]) => `${x(a)},${y(b)}`).join(" "),
      fill: "none",
      stroke: "#2f6fdb",
      "stroke-width": 2,
    });
    for (const [a, b] of points) add("circle", { cx: x(a), cy: y(b), r: 3, fill: "#2f6fdb" });
  } else {
    add("text", { x: width / 2, y: height / 2, "text-anchor": "middle", ...label }, "no data yet");
  }
  return h("div", { class: "chart" }, h("div", { class: "muted" }, title), svg);
}
