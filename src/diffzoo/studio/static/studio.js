// diffzoo studio: plain JavaScript over the JSON API (no framework, no external assets).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, job: null, uploads: {}, masks: {} };

function showError(msg) {
  const box = $("error");
  box.textContent = msg;
  box.hidden = !msg;
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  let r;
  try {
    r = await fetch(path, opts);
  } catch (e) {
    throw new Error("the studio server is not reachable");
  }
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) throw new Error((data && data.error) || `request failed (${r.status})`);
  return data;
}

// ---------------------------------------------------------------------------------------- tabs
function selectPanel(name) {
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.panel === name));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.dataset.panel === name));
}

// ---------------------------------------------------------------------------------------- image + mask inputs
function setupImageInput(prefix) {
  const grid = 32;
  const canvas = $(prefix + "-mask");
  const ctx = canvas.getContext("2d");
  const cell = canvas.width / grid;
  const mask = Array.from({ length: grid }, () => new Array(grid).fill(0));
  state.masks[prefix] = { mask, drawn: false };
  const draw = () => {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "rgba(229, 57, 53, 0.55)";
    for (let i = 0; i < grid; i++) for (let j = 0; j < grid; j++) if (mask[i][j]) ctx.fillRect(j * cell, i * cell, cell, cell);
  };
  state.masks[prefix].redraw = draw;
  const enabled = () => $(prefix + "-draw") && $(prefix + "-draw").checked;
  let painting = false;
  const paint = (ev) => {
    const r = canvas.getBoundingClientRect();
    const j = Math.floor(((ev.clientX - r.left) / r.width) * grid);
    const i = Math.floor(((ev.clientY - r.top) / r.height) * grid);
    for (let di = -1; di <= 1; di++) for (let dj = -1; dj <= 1; dj++) {
      const a = i + di, b = j + dj;
      if (a >= 0 && a < grid && b >= 0 && b < grid) mask[a][b] = 1;
    }
    state.masks[prefix].drawn = true;
    draw();
  };
  canvas.addEventListener("mousedown", (ev) => { if (enabled()) { painting = true; paint(ev); } });
  canvas.addEventListener("mousemove", (ev) => { if (painting) paint(ev); });
  window.addEventListener("mouseup", () => { painting = false; });
  const clear = $(prefix + "-clear");
  if (clear) clear.addEventListener("click", () => { setMask(prefix, null); });

  $(prefix + "-file").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    showError("");
    const data = await new Promise((resolve, reject) => {
      const fr = new FileReader();
      fr.onload = () => resolve(fr.result);
      fr.onerror = () => reject(new Error("image: the file could not be read"));
      fr.readAsDataURL(file);
    });
    try {
      const up = await api("/api/upload", { name: file.name, data });
      useUpload(prefix, up);
    } catch (e) {
      state.uploads[prefix] = null;
      $(prefix + "-preview").removeAttribute("src");
      showError(e.message);
    }
  });
  $(prefix + "-example").addEventListener("change", (ev) => {
    const ex = state.info.examples.find((e) => e.id === ev.target.value);
    if (ex) { showError(""); useUpload(prefix, ex); }
  });
}

function setMask(prefix, values) {
  const m = state.masks[prefix];
  if (!m) return;
  for (let i = 0; i < m.mask.length; i++) for (let j = 0; j < m.mask.length; j++) {
    m.mask[i][j] = values && values[i] ? (values[i][j] ? 1 : 0) : 0;
  }
  m.drawn = !!values;
  m.redraw();
}

function useUpload(prefix, up) {
  state.uploads[prefix] = up;
  $(prefix + "-preview").src = up.url;
  if (prefix === "edit") {
    if (up.source_prompt) $("edit-source").value = up.source_prompt;
    if (up.target_prompt) $("edit-target").value = up.target_prompt;
    setMask("edit", up.mask || null);
  } else {
    setMask(prefix, null);
  }
}

function currentMask(prefix) {
  const m = state.masks[prefix];
  if (!m || !m.drawn || !m.mask.some((r) => r.some((v) => v))) return null;
  return m.mask;
}

// ---------------------------------------------------------------------------------------- runs
function numOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

async function submit(panel, settings) {
  showError("");
  if (state.job) { showError("a run is in progress; wait for it or cancel it"); return; }
  $("progress").value = 0;
  let job;
  try {
    job = await api("/api/run/" + panel, settings);
  } catch (e) {
    showError(e.message);
    return;
  }
  state.job = job;
  $("cancel").disabled = false;
  $(panel + "-results").textContent = "";
  poll(panel, job.id);
}

async function poll(panel, id) {
  let job;
  try {
    job = await api("/api/jobs/" + id);
  } catch (e) {
    finishJob(); showError(e.message); return;
  }
  $("progress").value = job.progress;
  $("status-msg").textContent = `${panel}: ${job.message} (${job.elapsed.toFixed(1)} s)`;
  if (job.state === "running") { setTimeout(() => poll(panel, id), 150); return; }
  finishJob();
  if (job.state === "done") render(panel, job);
  else if (job.state === "cancelled") { $("status-msg").textContent = `${panel}: cancelled`; $("progress").value = 0; }
  else showError(job.error || "the run failed");
}

function finishJob() {
  state.job = null;
  $("cancel").disabled = true;
}

function fileUrl(job, name, download) {
  return `/api/jobs/${job.id}/files/${encodeURIComponent(name)}` + (download ? "?download=1" : "");
}

function render(panel, job) {
  const box = $(panel + "-results");
  box.textContent = "";
  const links = document.createElement("div");
  links.className = "links";
  for (const name of job.files.filter((f) => f === "settings.json" || f === "input.png")) {
    const a = document.createElement("a");
    a.href = fileUrl(job, name, true);
    a.download = name;
    a.textContent = "download " + name;
    a.className = "download-" + name.replace(".", "-");
    links.append(a, document.createTextNode("  "));
  }
  box.append(links);
  for (const r of job.results) {
    const card = document.createElement("figure");
    card.className = r.kind === "reference" ? "card reference" : "card result";
    card.dataset.label = r.label;
    if (r.image) {
      const img = document.createElement("img");
      img.src = fileUrl(job, r.image, false);
      img.alt = r.label;
      card.append(img);
    }
    const cap = document.createElement("figcaption");
    cap.textContent = r.label;
    card.append(cap);
    const table = document.createElement("table");
    table.className = "metrics";
    for (const [k, v] of Object.entries(r.metrics || {})) {
      if (v === null || v === undefined) continue;
      const tr = document.createElement("tr");
      const a = document.createElement("td"); a.textContent = k;
      const b = document.createElement("td"); b.textContent = String(v); b.className = "v";
      tr.append(a, b); table.append(tr);
    }
    card.append(table);
    if (r.file) {
      const a = document.createElement("a");
      a.href = fileUrl(job, r.file, true); a.download = r.file; a.textContent = "PNG";
      card.append(a);
    }
    if (r.cli || r.python) {
      const d = document.createElement("details");
      const s = document.createElement("summary"); s.textContent = r.cli ? "CLI" : "Python";
      const c = document.createElement("code"); c.textContent = r.cli || r.python;
      d.append(s, c); card.append(d);
    }
    if (r.note) { const p = document.createElement("p"); p.className = "note"; p.textContent = r.note; card.append(p); }
    box.append(card);
  }
  $("status-msg").textContent = `${panel}: done in ${job.elapsed.toFixed(1)} s`;
}

function checked(fieldsetId) {
  return Array.from(document.querySelectorAll(`#${fieldsetId} input[type=checkbox]:checked`)).map((c) => c.value);
}

function checkboxes(fieldsetId, names, ticked, labels) {
  const fs = $(fieldsetId);
  fs.querySelectorAll("label").forEach((l) => l.remove());
  for (const n of names) {
    const l = document.createElement("label");
    const c = document.createElement("input");
    c.type = "checkbox"; c.value = n; c.checked = ticked.includes(n);
    l.append(c, document.createTextNode(" " + (labels && labels[n] ? labels[n] : n)));
    fs.append(l);
  }
}

function options(selectId, names) {
  const s = $(selectId);
  s.textContent = "";
  for (const n of names) { const o = document.createElement("option"); o.value = n; o.textContent = n; s.append(o); }
}

// ---------------------------------------------------------------------------------------- panels
function setupEdit(info) {
  $("edit-model").textContent = info.edit.model;
  const labels = {};
  for (const m of info.edit.methods) labels[m.name] = `${m.name} (${m.default_guidance})`;
  checkboxes("edit-methods", info.edit.methods.map((m) => m.name), ["ddim", "sdedit"], labels);
  $("edit-run").addEventListener("click", () => submit("edit", {
    image: state.uploads.edit ? state.uploads.edit.id : null,
    source_prompt: $("edit-source").value,
    target_prompt: $("edit-target").value,
    methods: checked("edit-methods"),
    steps: numOrNull("edit-steps"),
    seed: numOrNull("edit-seed"),
    guidance: numOrNull("edit-guidance"),
    strength: numOrNull("edit-strength"),
    mask: currentMask("edit"),
  }));
}

function setupRestore(info) {
  const r = info.restore;
  options("restore-prior", Object.keys(r.priors));
  options("restore-operator", r.operators);
  const update = () => {
    const kind = r.priors[$("restore-prior").value];
    let names = r.methods[kind].slice();
    if (kind === "gaussian" && $("restore-operator").value === "cs") names = names.concat(r.methods.cs_only);
    const ticked = kind === "gaussian" ? ["ddnm", "pinv"] : ["aps_ii", "pinv"];
    checkboxes("restore-methods", names, ticked);
  };
  $("restore-prior").addEventListener("change", update);
  $("restore-operator").addEventListener("change", update);
  update();
  $("restore-run").addEventListener("click", () => submit("restore", {
    image: state.uploads.restore ? state.uploads.restore.id : null,
    prior: $("restore-prior").value,
    operator: $("restore-operator").value,
    methods: checked("restore-methods"),
    steps: numOrNull("restore-steps"),
    seed: numOrNull("restore-seed"),
    sigma_y: numOrNull("restore-sigma"),
    ratio: numOrNull("restore-ratio"),
    factor: numOrNull("restore-factor"),
    missing: numOrNull("restore-missing"),
    mask: currentMask("restore"),
  }));
}

function setupSample(info) {
  const s = info.sample;
  options("sample-model", Object.keys(s.models));
  const update = () => {
    const m = s.models[$("sample-model").value];
    const names = s.samplers[m.kind];
    const ticked = names.filter((n) => ["ddim", "dpmpp_2m", "fhs", "generator"].includes(n));
    checkboxes("sample-samplers", names, ticked.length ? ticked : names.slice(0, 1));
    checkboxes("sample-variants", s.variants[m.kind], ["none"]);
    $("sample-prompt").disabled = m.kind !== "text";
    if (m.kind === "text" && $("sample-guidance").value.trim() === "1") $("sample-guidance").value = "5";
  };
  $("sample-model").addEventListener("change", update);
  update();
  $("sample-variants-note").textContent = s.variants_note || "";
  $("sample-run").addEventListener("click", () => {
    const steps = $("sample-steps").value.split(",").map((v) => v.trim()).filter((v) => v !== "").map(Number);
    submit("sample", {
      model: $("sample-model").value,
      samplers: checked("sample-samplers"),
      steps,
      n: numOrNull("sample-n"),
      seed: numOrNull("sample-seed"),
      guidance: numOrNull("sample-guidance"),
      class_label: $("sample-class").value.trim() || null,
      variants: checked("sample-variants"),
      prompt: s.models[$("sample-model").value].kind === "text" ? $("sample-prompt").value : null,
    });
  });
}

function setupAudit(info) {
  const box = $("audit-families");
  box.textContent = "";
  let any = false;
  for (const f of info.audit.families) {
    const div = document.createElement("div");
    div.className = "family" + (f.installed ? "" : " missing");
    div.dataset.family = f.name;
    const h = document.createElement("strong");
    h.textContent = f.name + ": ";
    div.append(h, document.createTextNode(f.installed ? f.what : f.message));
    if (f.installed) {
      const fs = document.createElement("fieldset");
      fs.id = "audit-" + f.name;
      div.append(fs);
      box.append(div);
      checkboxes(fs.id, f.entries, any ? [] : f.entries.slice(0, 1));  // one family per run
      any = true;
    } else {
      box.append(div);
    }
  }
  $("audit-run").disabled = !any;
  const wms = info.audit.families.find((f) => f.name === "watermarks");
  options("audit-watermark", wms && wms.installed ? wms.entries : []);
  $("audit-run").addEventListener("click", () => {
    const fam = info.audit.families.find((f) => f.installed && checked("audit-" + f.name).length);
    submit("audit", {
      image: state.uploads.audit ? state.uploads.audit.id : null,
      family: fam ? fam.name : null,
      entries: fam ? checked("audit-" + fam.name) : [],
      steps: numOrNull("audit-steps"),
      seed: numOrNull("audit-seed"),
      prompt: $("audit-prompt").value,
      bits: $("audit-bits").value.trim() || null,
      watermark: $("audit-watermark").value || null,
      strength: numOrNull("audit-strength"),
    });
  });
}

async function init() {
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => selectPanel(b.dataset.panel)));
  $("cancel").addEventListener("click", async () => {
    if (!state.job) return;
    try { await api(`/api/jobs/${state.job.id}/cancel`, {}); } catch (e) { showError(e.message); }
  });
  let info;
  try {
    info = await api("/api/info");
  } catch (e) {
    showError(e.message);
    return;
  }
  state.info = info;
  for (const prefix of ["edit", "restore", "audit"]) {
    setupImageInput(prefix);
    for (const ex of info.examples) {
      const o = document.createElement("option");
      o.value = ex.id; o.textContent = ex.name + (ex.source_prompt ? `: ${ex.source_prompt}` : "");
      $(prefix + "-example").append(o);
    }
  }
  setupEdit(info);
  setupRestore(info);
  setupSample(info);
  setupAudit(info);
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", init);
