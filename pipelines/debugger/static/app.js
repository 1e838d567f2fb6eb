// iomt-fhir mapping debugger: the page. Every result comes from POST /api/run (the same
// engine as the CLI); this file only edits text, calls the API and shows what it answers.
// No framework, nothing loaded from elsewhere; user text is only ever set as textContent.
"use strict";

const LINE_HEIGHT = 18;   // keep in step with --lh in app.css
const PADDING_TOP = 4;
const DEBOUNCE_MS = 300;
const MAX_CARDS = 200;
const MAX_POINTS = 60;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "top") node.style.top = v;  // CSSOM: the page's CSP forbids style attributes
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// ---- editor: gutter with line numbers, a layer of line marks, a textarea on top ----------
class Editor {
  constructor(root, file, label, onChange) {
    this.file = file;
    this.root = root;
    this.gutterNums = el("div", { class: "nums" });
    this.marksLayer = el("div", { class: "marks", "aria-hidden": "true" });
    this.textarea = el("textarea", { spellcheck: "false", wrap: "off", autocomplete: "off",
                                     autocapitalize: "off", "aria-label": label, dataset: { file } });
    root.append(el("div", { class: "gutter", "aria-hidden": "true" }, this.gutterNums),
                el("div", { class: "code" }, this.marksLayer, this.textarea));
    this.marks = new Map();   // line -> "error" | "warning"
    this.okLines = new Set();
    this.current = 0;
    this.renderedKey = "";
    this.textarea.addEventListener("input", () => { this.render(); onChange(); });
    this.textarea.addEventListener("scroll", () => this.sync());
    this.textarea.addEventListener("keydown", (e) => {
      if (e.key === "Tab" && !e.shiftKey && !e.ctrlKey && !e.metaKey && !e.altKey) {
        e.preventDefault();
        document.execCommand("insertText", false, "  ");
      }
    });
  }
  get value() { return this.textarea.value; }
  set value(text) { this.textarea.value = text; this.textarea.scrollTop = 0; this.render(); }
  lineCount() { let n = 1; for (const ch of this.textarea.value) if (ch === "\n") n++; return n; }
  setMarks(marks, okLines) { this.marks = marks; this.okLines = okLines || new Set(); this.render(); }
  render() {
    const n = this.lineCount();
    const key = n + "|" + [...this.marks].join(",") + "|" + [...this.okLines].join(",") + "|" + this.current;
    if (key === this.renderedKey) return;
    this.renderedKey = key;
    const nums = document.createDocumentFragment();
    for (let i = 1; i <= n; i++) {
      const sev = this.marks.get(i);
      nums.append(el("div", { class: "ln" + (sev ? " " + sev : this.okLines.has(i) ? " ok" : ""),
                              dataset: { line: i } }, i));
    }
    this.gutterNums.replaceChildren(nums);
    const marks = document.createDocumentFragment();
    for (const [line, sev] of this.marks) {
      if (line > n) continue;
      marks.append(el("div", { class: "mark " + sev + (line === this.current ? " current" : ""),
                               dataset: { line }, top: `${PADDING_TOP + (line - 1) * LINE_HEIGHT}px` }));
    }
    if (this.current && !this.marks.has(this.current) && this.current <= n) {
      marks.append(el("div", { class: "mark current", dataset: { line: this.current },
                               top: `${PADDING_TOP + (this.current - 1) * LINE_HEIGHT}px` }));
    }
    this.marksLayer.replaceChildren(marks);
    this.sync();
  }
  sync() {
    const y = this.textarea.scrollTop;
    this.gutterNums.style.transform = `translateY(${-y}px)`;
    this.marksLayer.style.transform = `translateY(${-y}px)`;
  }
  jump(line, column) {
    const text = this.textarea.value;
    let start = 0;
    for (let i = 1; i < line; i++) {
      const next = text.indexOf("\n", start);
      if (next < 0) break;
      start = next + 1;
    }
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    const at = column > 0 ? Math.min(start + column - 1, end) : start;
    this.textarea.focus({ preventScroll: true });
    this.textarea.setSelectionRange(at, column > 0 ? at : end);
    this.textarea.scrollTop = Math.max(0, (line - 1) * LINE_HEIGHT - this.textarea.clientHeight / 3);
    this.current = line;
    this.render();
    this.sync();
  }
}

// ---- state ---------------------------------------------------------------------------
const FILES = { device: "Device mapping", fhir: "FHIR mapping", messages: "Test messages", deviceUse: "Device use" };
const editors = {};
let examples = [];
let maxRequestBytes = 4 * 1024 * 1024;
let timer = null;
let sequence = 0;

function inputFormat() { return document.querySelector('input[name="format"]:checked').value; }
function setInputFormat(value) {
  const radio = document.querySelector(`input[name="format"][value="${value === "envelope" ? "envelope" : "body"}"]`);
  radio.checked = true;
}

function setStatus(text, kind) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = "status " + (kind || "");
  document.body.dataset.state = (kind || "").split(" ")[0];
}

function schedule() {
  clearTimeout(timer);
  setStatus("editing…", "busy");
  timer = setTimeout(run, DEBOUNCE_MS);
}

async function run() {
  const mine = ++sequence;
  const body = JSON.stringify({ deviceMapping: editors.device.value, fhirMapping: editors.fhir.value,
                                messages: editors.messages.value, deviceUse: editors.deviceUse.value,
                                inputFormat: inputFormat() });
  if (new Blob([body]).size > maxRequestBytes) {
    setStatus(`too large to run (limit ${Math.round(maxRequestBytes / 1048576)} MiB)`, "failed");
    return;
  }
  setStatus("running…", "busy");
  const started = performance.now();
  let answer;
  try {
    const response = await fetch("/api/run", { method: "POST", body,
                                               headers: { "Content-Type": "application/json" } });
    answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
  } catch (e) {
    if (mine === sequence) setStatus("failed: " + e.message, "failed");
    return;
  }
  if (mine !== sequence) return;  // a newer edit is on its way
  render(answer);
  const ms = Math.round(performance.now() - started);
  const errors = answer.problems.filter((p) => p.severity === "error").length;
  setStatus(`${errors ? errors + " mapping error" + (errors > 1 ? "s" : "") : "mappings valid"} · ` +
            `${answer.measurements.length} measurements · ${answer.observations.length} Observations · ${ms} ms`,
            errors ? "done invalid" : "done");
  document.body.dataset.runs = String(Number(document.body.dataset.runs || 0) + 1);
}

// ---- rendering -----------------------------------------------------------------------
function setCount(id, n, bad) {
  const node = document.getElementById(id);
  node.textContent = String(n);
  node.className = "count" + (bad ? " bad" : "");
}

function shortTime(iso) {
  return typeof iso === "string" ? iso.replace("T", " ").replace(/(\.\d*?)0+Z$/, "$1Z").replace(".Z", "Z") : "";
}

function messageLines(text) {
  const out = [];
  text.split("\n").forEach((line, i) => {
    if (i === 0 && line.startsWith("\ufeff")) line = line.slice(1);
    if (line.trim()) out.push(i + 1);
  });
  return out;
}

function render(answer) {
  // problems pane + marks in the mapping editors
  const list = document.getElementById("problems");
  const marks = { device: new Map(), fhir: new Map(), deviceUse: new Map() };
  const items = answer.problems.map((p) => {
    if (p.line > 0 && marks[p.file] && marks[p.file].get(p.line) !== "error") marks[p.file].set(p.line, p.severity);
    const where = p.file + (p.line > 0 ? `:${p.line}:${p.column}` : "");
    return el("li", { class: p.severity, dataset: { file: p.file, line: p.line },
                      onclick: () => editors[p.file].jump(p.line || 1, p.column) },
              el("span", { class: "sev " + p.severity }, p.severity),
              el("span", { class: "where" }, where), el("span", { class: "msg" }, p.message));
  });
  list.replaceChildren(...(items.length ? items : [el("li", { class: "none" }, "No problems: both mappings are valid and fit together.")]));
  setCount("problems-count", answer.problems.length, answer.problems.some((p) => p.severity === "error"));
  editors.device.setMarks(marks.device);
  editors.fhir.setMarks(marks.fhir);
  editors.deviceUse.setMarks(marks.deviceUse);

  // measurements, per message line
  const byLine = new Map();
  answer.measurements.forEach((m, i) => {
    const line = answer.measurementIndex[i];
    if (!byLine.has(line)) byLine.set(line, []);
    byLine.get(line).push(m);
  });
  const errorsByLine = new Map();
  for (const e of answer.errors) {
    if (!errorsByLine.has(e.index)) errorsByLine.set(e.index, []);
    errorsByLine.get(e.index).push(e);
  }
  const messageMarks = new Map();
  for (const e of answer.errors) messageMarks.set(e.index, "error");
  editors.messages.setMarks(messageMarks, new Set(byLine.keys()));

  const deviceBroken = answer.problems.some((p) => p.file === "device" && p.severity === "error");
  const lines = messageLines(editors.messages.value);
  const cards = [];
  for (const line of lines.slice(0, MAX_CARDS)) {
    const ms = byLine.get(line) || [];
    const errs = (errorsByLine.get(line) || []).filter((e) => e.stage === "normalization");
    if (deviceBroken) break;
    cards.push(measurementCard(line, ms, errs));
  }
  if (deviceBroken) cards.push(el("div", { class: "placeholder" }, "Fix the device mapping's errors to see measurements."));
  else if (!lines.length) cards.push(el("div", { class: "placeholder" }, "Write or open test messages: one JSON message per line."));
  if (lines.length > MAX_CARDS) cards.push(el("div", { class: "placeholder" }, `… and ${lines.length - MAX_CARDS} more messages`));
  document.getElementById("measurements").replaceChildren(...cards);
  const failing = answer.errors.filter((e) => e.stage === "normalization").length;
  setCount("measurements-count", `${answer.measurements.length} from ${lines.length} messages` +
           (failing ? `, ${failing} failed` : ""), failing > 0);

  // Observations (and what could not be converted)
  const fhirBroken = answer.problems.some((p) => p.file === "fhir" && p.severity === "error");
  const obsCards = [];
  for (const e of answer.errors.filter((x) => x.stage === "fhir_conversion")) {
    obsCards.push(el("div", { class: "card failed conversion", dataset: { line: e.index } },
      el("div", { class: "head", onclick: () => editors.messages.jump(e.index, 0) },
         el("span", { class: "title" }, "not converted"), el("span", { class: "meta" }, `message line ${e.index}`)),
      el("div", { class: "body" }, el("span", { class: "err-type" }, e.error), " ", e.message)));
  }
  answer.observations.slice(0, MAX_CARDS).forEach((o, i) => obsCards.push(observationCard(o, answer.sampledData[i] || [])));
  if (fhirBroken) obsCards.push(el("div", { class: "placeholder" }, "Fix the FHIR mapping's errors to see Observations."));
  else if (!answer.observations.length && !obsCards.length) obsCards.push(el("div", { class: "placeholder" }, "No Observations yet."));
  document.getElementById("observations").replaceChildren(...obsCards);
  const conversions = answer.errors.length - failing;
  setCount("observations-count", String(answer.observations.length) + (conversions ? `, ${conversions} not converted` : ""),
           conversions > 0);
}

function measurementCard(line, measurements, errors) {
  const jump = () => editors.messages.jump(line, 0);
  if (errors.length) {
    return el("div", { class: "card failed", dataset: { line } },
      el("div", { class: "head", onclick: jump }, el("span", { class: "title" }, `line ${line}`),
         el("span", { class: "err-type" }, errors[0].error)),
      el("div", { class: "body" }, errors[0].message));
  }
  if (!measurements.length) {
    return el("div", { class: "card empty", dataset: { line } },
      el("div", { class: "head", onclick: jump }, el("span", { class: "title" }, `line ${line}`),
         el("span", { class: "meta" }, "no template matched (dropped, as the reference does)")));
  }
  return el("div", { class: "card", dataset: { line } },
    el("div", { class: "head", onclick: jump }, el("span", { class: "title" }, `line ${line}`),
       el("span", { class: "meta" }, `${measurements.length} measurement${measurements.length > 1 ? "s" : ""}`)),
    el("div", { class: "body" }, measurements.map((m) => el("div", { class: "measurement" },
      el("div", { class: "facts" },
         fact("Type", m.Type), fact("Occurrence", m.OccurrenceTimeUtc), fact("Device", m.DeviceId),
         fact("Patient", m.PatientId), fact("Encounter", m.EncounterId), fact("Correlation", m.CorrelationId),
         fact("Ingestion", m.IngestionTimeUtc),
         el("span", {}, m.Properties.map((p) => el("span", { class: "chip" }, `${p.Name} = ${p.Value}`)))),
      el("details", {}, el("summary", {}, "JSON (as normalize prints it)"),
         el("pre", { class: "json" }, JSON.stringify(m)))))));
}

function fact(name, value) {
  return value === null || value === undefined ? null : el("span", {}, el("b", {}, name), el("code", {}, value));
}

function quantityText(q) {
  return [q.value, q.unit || q.code].filter((x) => x !== undefined && x !== null).join(" ");
}

function valueNodes(holder, readable, path) {
  if (holder.valueQuantity) return [quantityText(holder.valueQuantity)];
  if (holder.valueString !== undefined) return [holder.valueString];
  if (holder.valueCodeableConcept) {
    const c = holder.valueCodeableConcept;
    return [c.text || "", (c.coding || []).map((x) => el("span", { class: "chip" }, `${x.system ? x.system.replace(/^https?:\/\//, "") + "|" : ""}${x.code}`))];
  }
  if (holder.valueSampledData) {
    const sd = holder.valueSampledData;
    const info = readable.find((r) => r.path === path);
    const points = info ? info.points : [];
    const unit = info && info.unit ? " " + info.unit : "";
    const rows = points.slice(0, MAX_POINTS).map(([t, v]) => el("tr", {}, el("td", {}, shortTime(t)), el("td", {}, v + unit)));
    return [el("div", {}, `${points.length} of ${info ? info.slots : "?"} slots filled, one every ${sd.period / 1000} s`),
            rows.length ? el("table", { class: "points" }, el("tbody", {}, rows)) : null,
            points.length > MAX_POINTS ? el("div", { class: "meta" }, `… ${points.length - MAX_POINTS} more`) : null,
            el("details", {}, el("summary", {}, "raw data"), el("pre", { class: "json" }, sd.data))];
  }
  return ["(no value)"];
}

function observationCard(o, readable) {
  const period = o.effectivePeriod || {};
  const same = period.start === period.end;
  const values = [];
  for (const key of ["valueQuantity", "valueString", "valueCodeableConcept", "valueSampledData"]) {
    if (o[key] !== undefined) values.push(el("div", { class: "value-line" }, el("span", { class: "vname" }, "value"), valueNodes(o, readable, "valueSampledData")));
  }
  (o.component || []).forEach((c, i) => values.push(el("div", { class: "value-line" },
    el("span", { class: "vname" }, (c.code && c.code.text) || `component ${i}`), valueNodes(c, readable, `component[${i}].valueSampledData`))));
  return el("div", { class: "card observation", dataset: { id: o.id } },
    el("div", { class: "head" }, el("span", { class: "title" }, (o.code && o.code.text) || "Observation"),
       el("span", { class: "meta" }, same ? shortTime(period.start) : `${shortTime(period.start)} → ${shortTime(period.end)}`),
       el("span", { class: "meta" }, o.status)),
    el("div", { class: "body" },
      el("dl", { class: "kv" },
         o.subject ? [el("dt", {}, "subject"), el("dd", {}, o.subject.reference)] : null,
         o.device ? [el("dt", {}, "device"), el("dd", {}, o.device.reference)] : null,
         o.encounter ? [el("dt", {}, "encounter"), el("dd", {}, o.encounter.reference)] : null,
         el("dt", {}, "identifier"), el("dd", {}, o.identifier && o.identifier[0] ? o.identifier[0].value : ""),
         el("dt", {}, "id"), el("dd", {}, o.id)),
      values,
      el("details", {}, el("summary", {}, "JSON (as transform prints it)"), el("pre", { class: "json" }, JSON.stringify(o, null, 2)))));
}

// ---- files, examples, start-up --------------------------------------------------------
function load(state) {
  editors.device.value = state.deviceMapping || "";
  editors.fhir.value = state.fhirMapping || "";
  editors.messages.value = state.messages || "";
  editors.deviceUse.value = state.deviceUse || "";
  setInputFormat(state.inputFormat);
  run();
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function start() {
  for (const [file, label] of Object.entries(FILES)) {
    editors[file] = new Editor(document.getElementById("editor-" + file), file, label, schedule);
    const panel = document.querySelector(`.panel[data-file="${file}"]`);
    const picker = panel.querySelector('input[type="file"]');
    picker.addEventListener("change", async () => {
      if (picker.files.length) {
        editors[file].value = await picker.files[0].text();
        picker.value = "";
        schedule();
      }
    });
    panel.querySelector("button.download").addEventListener("click", (e) =>
      download(e.target.dataset.name, editors[file].value));
  }
  document.querySelectorAll('input[name="format"]').forEach((r) => r.addEventListener("change", schedule));
  const select = document.getElementById("example");
  let startState;
  try {
    startState = await (await fetch("/api/start")).json();
  } catch (e) {
    setStatus("cannot reach the debugger: " + e.message, "failed");
    return;
  }
  examples = startState.examples;
  maxRequestBytes = startState.maxRequestBytes || maxRequestBytes;
  const initial = startState.initial || {};
  const fromFiles = ["deviceMapping", "fhirMapping", "messages", "deviceUse"].some((k) => k in initial);
  if (fromFiles) select.append(el("option", { value: "" }, "Files from the command line"));
  for (const ex of examples) select.append(el("option", { value: ex.id }, ex.label));
  select.addEventListener("change", () => {
    const ex = examples.find((x) => x.id === select.value);
    if (ex) load(ex);
  });
  load(fromFiles ? initial : examples[0]);
}

start();
