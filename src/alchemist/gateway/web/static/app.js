// Audio Alchemist web page: sign-in, upload with progress, a live job list, admin.
// Vanilla ES2020, no libraries. Server text only ever goes through textContent.

const PAGE_SIZE = 20;
const UPLOADS_AT_ONCE = 2;
const $ = (sel, root = document) => root.querySelector(sel);

// The session (with its CSRF token) lives in memory only, never in storage:
// after a reload the page asks GET /api/v1/session again.
let session = null;
let events = null;   // the EventSource of the live list
let current = null;  // the job list on screen (receives live updates)
let options = [];    // OptionFields from GET /api/v1/options
let pending = [];    // files chosen or dropped, waiting for "Upload"

/* ---------- helpers ---------- */

// Builds an element; attributes that are null/undefined/false are skipped.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

// The readable sentence of an error answer ({"detail": ...}), with fallbacks.
function detailOf(data, status) {
  const detail = data && data.detail;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail)) return detail.map((d) => (d && d.msg) || String(d)).join("; ");
  if (status === 0) return "The server cannot be reached. Check your connection and try again.";
  if (status === 413) return "The file is larger than the server accepts.";
  if (status === 503) return "The service is busy. Please try again in a moment.";
  return `The request failed (HTTP ${status}).`;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session) headers["X-CSRF-Token"] = session.csrf_token;
  let res;
  try {
    res = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, detailOf(null, 0));
  }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    // A 401 while signed in means the cookie expired: back to the sign-in form.
    if (res.status === 401 && session) signedOut("Your session has ended. Please sign in again.");
    throw new ApiError(res.status, detailOf(data, res.status));
  }
  return data;
}

function say(text, kind = "error") {
  $("#message").textContent = text || "";
  $("#toast").dataset.kind = kind;
  $("#toast").hidden = !text;
  clearTimeout(say.timer);
  if (text && kind === "ok") say.timer = setTimeout(() => say(""), 5000);
}

function fmtDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "–";
  const s = Math.round(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${pad(m)}:${pad(s % 60)}`;
}

function fmtDate(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso || "") : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/* ---------- session and views ---------- */

async function start() {
  try {
    session = await api("GET", "/api/v1/session");
  } catch (e) {
    return signedOut(e.status === 401 ? "" : e.message);
  }
  enterApp();
}

function signedOut(message) {
  session = null;
  closeEvents();
  current = null;
  $("#loading").hidden = true;
  $("#session-nav").hidden = true;
  $("#jobs-view").hidden = true;
  $("#admin-view").hidden = true;
  $("#signin-view").hidden = false;
  $("#signin-password").value = "";
  say(message);
  $("#signin-email").focus();
}

function enterApp() {
  $("#loading").hidden = true;
  $("#signin-view").hidden = true;
  $("#session-nav").hidden = false;
  $("#user-email").textContent = session.username;
  $("#nav-admin").hidden = !session.admin;
  if (!options.length) loadOptions();
  loadFeatures();
  route();
}

// The operator may turn the API docs off (API_DOCS=false): then no link leads to a 404.
async function loadFeatures() {
  try {
    const features = await api("GET", "/api/v1/features");
    $("#nav-docs").hidden = !features.api_docs;
  } catch {
    // Unknown: the link stays, and /docs itself says whether it is there.
  }
}

$("#signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("#signin-submit");
  if (!$("#signin-email").value.trim() || !$("#signin-password").value) {
    say("Enter your email and password.");
    return;
  }
  button.disabled = true;
  say("");
  try {
    session = await api("POST", "/api/v1/session", {
      email: $("#signin-email").value.trim(),
      password: $("#signin-password").value,
    });
    $("#signin-password").value = "";
    enterApp();
  } catch (e) {
    say(e.message);
  } finally {
    button.disabled = false;
  }
});

$("#sign-out").addEventListener("click", async () => {
  try { await api("DELETE", "/api/v1/session"); } catch { /* signed out either way */ }
  signedOut("");
  location.hash = "#/";
});

$("#message-close").addEventListener("click", () => say(""));

// Hash routing: "#/" is upload + my jobs, "#/admin" the admin page.
function route() {
  if (!session) return;
  const admin = location.hash === "#/admin";
  if (admin && !session.admin) { location.replace("#/"); return; }
  $("#jobs-view").hidden = admin;
  $("#admin-view").hidden = !admin;
  for (const link of [$("#nav-jobs"), $("#nav-admin")]) link.removeAttribute("aria-current");
  (admin ? $("#nav-admin") : $("#nav-jobs")).setAttribute("aria-current", "page");
  current = admin ? allJobs : myJobs;
  current.load(0);
  if (admin) loadUsers();
  openEvents(admin);
}
window.addEventListener("hashchange", route);

/* ---------- live updates ---------- */

function openEvents(all) {
  closeEvents();
  const es = new EventSource(all ? "/api/v1/events?all=true" : "/api/v1/events");
  let opened = false;
  es.addEventListener("job", (event) => {
    let job;
    try { job = JSON.parse(event.data); } catch { return; }
    if (current) current.update(job);
  });
  // After a reconnect, changes may have been missed: reload the page on screen.
  es.addEventListener("open", () => { if (opened && current) current.load(); opened = true; });
  // The browser retries by itself; it gives up only on an HTTP error (e.g. the session
  // expired), so check the session then and start over.
  es.addEventListener("error", () => {
    if (es.readyState !== EventSource.CLOSED) return;
    setTimeout(async () => {
      if (events !== es || !session) return;
      try { session = await api("GET", "/api/v1/session"); route(); } catch { /* api() handled 401 */ }
    }, 5000);
  });
  events = es;
}

function closeEvents() {
  if (events) events.close();
  events = null;
}

/* ---------- job list (my jobs, and all jobs for admins) ---------- */

function jobList(root, all) {
  const prefix = root.id;
  let page = 0;
  let reloadTimer = null;
  const columns = ["File", ...(all ? ["Owner"] : []), "Status", "Progress", "Duration", "Actions"];
  const tbody = el("tbody");
  const table = el("table", { class: "jobs" },
    el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", { scope: "col", class: `col-${c.toLowerCase()}`, text: c })))),
    tbody);
  const wrap = el("div", { class: "table-wrap" }, table);
  const empty = el("p", { class: "empty", text: "No jobs yet", hidden: true });
  const newer = el("button", { type: "button", class: "secondary newer", id: `${prefix}-newer`, text: "Newer", disabled: true });
  const older = el("button", { type: "button", class: "secondary older", id: `${prefix}-older`, text: "Older", disabled: true });
  const info = el("span", { class: "page-info", id: `${prefix}-page` });
  root.append(wrap, empty, el("nav", { class: "pager", "aria-label": "Pages" }, newer, info, older));

  newer.addEventListener("click", () => load(page - 1));
  older.addEventListener("click", () => load(page + 1));
  tbody.addEventListener("click", async (event) => {
    const button = event.target.closest("button.delete");
    if (!button) return;
    const tr = button.closest("tr");
    button.disabled = true;
    try {
      await api("DELETE", `/api/v1/jobs/${encodeURIComponent(tr.dataset.jobId)}`);
      tr.remove();
      load(); // refill the page from the next one and fix the counts
    } catch (e) {
      button.disabled = false;
      say(e.message);
    }
  });

  async function load(p = page) {
    let data;
    try {
      data = await api("GET", `/api/v1/jobs?limit=${PAGE_SIZE}&offset=${p * PAGE_SIZE}&all=${all}`);
    } catch (e) {
      if (e.status !== 401) say(e.message);
      return;
    }
    const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
    if (p > 0 && p >= pages) return load(pages - 1); // the page emptied (deletes)
    page = p;
    tbody.replaceChildren(...data.jobs.map(row));
    wrap.hidden = data.jobs.length === 0;
    empty.hidden = !wrap.hidden;
    info.textContent = `Page ${page + 1} of ${pages}`;
    newer.disabled = page === 0;
    older.disabled = page >= pages - 1;
  }

  function row(job) {
    const tr = el("tr", { "data-job-id": job.id },
      el("td", { class: "file", "data-label": "File" },
        el("span", { class: "filename" }), el("p", { class: "job-error" }), el("p", { class: "job-warning" }),
        el("p", { class: "job-expiry" })),
      all ? el("td", { class: "owner", "data-label": "Owner" }) : null,
      el("td", { class: "status", "data-label": "Status" }),
      el("td", { class: "progress", "data-label": "Progress" },
        el("span", { class: "meter" }, el("progress", { max: "100", value: "0" }), el("span", { class: "pct" }))),
      el("td", { class: "duration", "data-label": "Duration" }),
      el("td", { class: "actions" }, el("button", { type: "button", class: "secondary delete", text: "Delete" })));
    fill(tr, job);
    return tr;
  }

  // Writes a job into its row in place, so live updates never rebuild the table.
  function fill(tr, job) {
    tr.dataset.status = job.status;
    const name = $(".filename", tr);
    name.textContent = job.filename || job.id;
    name.title = job.created_at ? `Uploaded ${fmtDate(job.created_at)}` : "";
    if (all) $(".owner", tr).textContent = job.owner || "";
    $(".status", tr).textContent = job.status;
    const pct = job.status === "done" ? 100 : Math.max(0, Math.min(100, Math.round((job.progress || 0) * 100)));
    $("progress", tr).value = pct;
    $(".pct", tr).textContent = `${pct}%`;
    $(".duration", tr).textContent = fmtDuration(job.duration);
    $(".job-error", tr).textContent = job.status === "failed" ? job.error || "The conversion failed." : "";
    $(".job-warning", tr).textContent = job.warning ? `Warning: ${job.warning}` : "";
    // Outputs are deleted after the retention period: say when, and say when it happened.
    $(".job-expiry", tr).textContent =
      job.status === "done" && job.expires_at ? `Kept until ${fmtDate(job.expires_at)}`
        : job.status === "expired" ? "Expired: the MP3 was deleted after the retention period" : "";
    let link = $("a.download", tr);
    if (job.status === "done" && job.download_url) {
      if (!link) {
        link = el("a", { class: "button download", download: "", text: "Download" });
        $(".actions", tr).prepend(link);
      }
      link.href = job.download_url;
    } else if (link) {
      link.remove();
    }
  }

  function update(job) {
    const tr = tbody.querySelector(`tr[data-job-id="${CSS.escape(String(job.id))}"]`);
    if (tr) fill(tr, job);
    else if (page === 0) {
      // A new job: reload page 1, once for a burst of events.
      clearTimeout(reloadTimer);
      reloadTimer = setTimeout(() => load(0), 200);
    }
  }

  return { load, update };
}

const myJobs = jobList($("#my-jobs"), false);
const allJobs = jobList($("#all-jobs"), true);

/* ---------- upload ---------- */

async function loadOptions() {
  try {
    options = (await api("GET", "/api/v1/options")).fields || [];
  } catch (e) {
    if (e.status !== 401) say(`Conversion options are unavailable: ${e.message}`);
    return;
  }
  $("#options").replaceChildren(...options.map(optionField));
  $("#options-fieldset").hidden = options.length === 0;
}

// One labelled input per OptionField, so a new option in the API needs no page change.
function optionField(f) {
  const id = `opt-${f.name}`;
  const help = f.description ? `${id}-help` : null;
  let input;
  if (f.type === "choice") {
    input = el("select");
    if (f.default == null) input.append(el("option", { value: "", text: "Default" }));
    for (const c of f.choices || []) input.append(el("option", { value: String(c), text: String(c) }));
    if (f.default != null) input.value = String(f.default);
  } else if (f.type === "boolean") {
    input = el("input", { type: "checkbox" });
    input.checked = Boolean(f.default);
  } else if (f.type === "integer" || f.type === "number") {
    input = el("input", {
      type: "number", min: f.minimum, max: f.maximum,
      step: f.type === "integer" ? "1" : "any", inputmode: f.type === "integer" ? "numeric" : "decimal",
    });
    if (f.default != null) input.value = String(f.default);
  } else {
    input = el("input", { type: "text", spellcheck: "false", autocomplete: "off" });
    if (f.default != null) input.value = String(f.default);
  }
  input.id = id;
  input.name = f.name;
  input.required = Boolean(f.required);
  if (help) input.setAttribute("aria-describedby", help);
  const label = el("label", { for: id, text: f.label || f.name });
  const check = f.type === "boolean";
  return el("div", { class: check ? "field field-check" : "field" },
    ...(check ? [input, label] : [label, input]),
    help ? el("small", { id: help, class: "help", text: f.description }) : null);
}

function optionValues() {
  const values = [];
  for (const f of options) {
    const input = document.getElementById(`opt-${f.name}`);
    if (!input) continue;
    const value = input.type === "checkbox" ? String(input.checked) : input.value.trim();
    if (value !== "") values.push([f.name, value]);
  }
  return values;
}

function choose(files) {
  pending = Array.from(files);
  $("#selected-files").replaceChildren(...pending.map((f) => el("li", { text: f.name })));
}

const fileInput = $("#file-input");
const dropZone = $("#drop-zone");
fileInput.addEventListener("change", () => choose(fileInput.files));
// A click anywhere on the zone opens the picker (the input itself handles Enter/Space).
dropZone.addEventListener("click", (event) => {
  if (event.target === dropZone || event.target.matches("p, ul, li")) fileInput.click();
});
for (const type of ["dragenter", "dragover"]) {
  dropZone.addEventListener(type, (event) => { event.preventDefault(); dropZone.classList.add("dragging"); });
}
dropZone.addEventListener("dragleave", (event) => {
  if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove("dragging");
});
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  if (!event.dataTransfer.files.length) return;
  try { fileInput.files = event.dataTransfer.files; } catch { /* old browsers: keep our own list */ }
  choose(event.dataTransfer.files);
});
// A file dropped beside the zone must not navigate away from the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

$("#upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!pending.length) { say("Choose one or more video files first."); fileInput.focus(); return; }
  say("");
  const fields = optionValues();
  const tasks = pending.map((file) => uploadRow(file, fields));
  pending = [];
  fileInput.value = "";
  $("#selected-files").replaceChildren();
  // A small pool: a few uploads at a time keep each one's progress meaningful.
  const workers = Array.from({ length: Math.min(UPLOADS_AT_ONCE, tasks.length) }, async () => {
    while (tasks.length) await tasks.shift()();
  });
  await Promise.all(workers);
});

// Adds the file's row to the upload list and returns the function that uploads it.
function uploadRow(file, fields) {
  const bar = el("progress", { max: "100", value: "0" });
  const pct = el("span", { class: "pct", text: "0%" });
  const state = el("span", { class: "upload-state", text: "Waiting" });
  const li = el("li", { class: "upload-row", "data-state": "waiting" },
    el("span", { class: "upload-name", text: file.name }), el("span", { class: "meter" }, bar, pct), state);
  $("#upload-list").prepend(li);
  const show = (n) => { bar.value = n; pct.textContent = `${n}%`; };
  const finish = (kind, text) => { li.dataset.state = kind; state.textContent = text; };

  return () => new Promise((resolve) => {
    if (!session) { finish("error", "Not signed in."); return resolve(); }
    const form = new FormData();
    // Option fields first, then the file, so a streaming parser has them before the data.
    for (const [name, value] of fields) form.append(name, value);
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest(); // fetch() has no upload progress
    xhr.open("POST", "/upload");
    xhr.setRequestHeader("X-CSRF-Token", session.csrf_token);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) show(Math.min(99, Math.floor((e.loaded / e.total) * 100)));
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 202 || xhr.status === 201 || xhr.status === 200) {
        show(100);
        finish("queued", "Queued");
        myJobs.load(0);
      } else {
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
        finish("error", detailOf(data, xhr.status));
        if (xhr.status === 401 && session) signedOut("Your session has ended. Please sign in again.");
      }
      resolve();
    });
    xhr.addEventListener("error", () => { finish("error", "The upload failed: the connection was lost."); resolve(); });
    finish("uploading", "Uploading");
    xhr.send(form);
  });
}

/* ---------- admin: users ---------- */

async function loadUsers() {
  let data;
  try {
    data = await api("GET", "/api/v1/users");
  } catch (e) {
    if (e.status !== 401) say(e.message);
    return;
  }
  $("#users-table tbody").replaceChildren(...(data.users || []).map((u) => el("tr", { "data-email": u.email },
    el("td", { class: "email", "data-label": "Email", text: u.email }),
    el("td", { class: "admin", "data-label": "Admin", text: u.admin ? "Yes" : "No" }),
    el("td", { class: "created", "data-label": "Created", text: fmtDate(u.created_at) }),
    el("td", { class: "actions" },
      el("button", { type: "button", class: "secondary reset", text: "Reset password" }),
      el("button", { type: "button", class: "danger remove", text: "Remove" })))));
}

const userPath = (email) => `/api/v1/users/${encodeURIComponent(email)}`;

$("#users-table tbody").addEventListener("click", async (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  const email = button.closest("tr").dataset.email;
  if (button.classList.contains("reset")) {
    $("#reset-email").textContent = email;
    $("#reset-username").value = email;
    $("#reset-form").dataset.email = email;
    $("#reset-form").hidden = false;
    $("#reset-password").value = "";
    $("#reset-password").focus();
  } else if (button.classList.contains("remove")) {
    if (!confirm(`Remove the user ${email}?`)) return;
    try {
      await api("DELETE", userPath(email));
      say(`Removed ${email}.`, "ok");
      loadUsers();
    } catch (e) { say(e.message); }
  }
});

$("#reset-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const email = $("#reset-form").dataset.email;
  try {
    await api("PUT", `${userPath(email)}/password`, { password: $("#reset-password").value });
    $("#reset-form").hidden = true;
    $("#reset-password").value = "";
    say(`The password of ${email} was changed.`, "ok");
  } catch (e) { say(e.message); }
});

$("#reset-cancel").addEventListener("click", () => { $("#reset-form").hidden = true; $("#reset-password").value = ""; });

$("#add-user-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const email = $("#new-user-email").value.trim();
  try {
    await api("POST", "/api/v1/users", {
      email, password: $("#new-user-password").value, admin: $("#new-user-admin").checked,
    });
    event.target.reset();
    say(`Added ${email}.`, "ok");
    loadUsers();
  } catch (e) { say(e.message); }
});

start();
