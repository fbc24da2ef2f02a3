// The demo page: each panel signs in as one user through the local stack's dev-only
// signing endpoint, then talks to that user's sandbox over the signed WebSocket URL.
"use strict";

const defaults = { a: "user_alice", b: "user_bob" };

function setup(panel) {
  panel.appendChild(document.getElementById("panel").content.cloneNode(true));
  const $ = (sel) => panel.querySelector(sel);
  const user = $(".user"), log = $(".log"), state = $(".state"), text = $(".text");
  user.value = defaults[panel.dataset.panel];
  let ws = null;
  // When the sandbox's start began (the Connect click, or a "starting" after a stop):
  // "ready" shows how long connect → ready took, a warm pool task's second or a
  // launch's wait.
  let startedAt = null;

  const add = (cls, body) => {
    // Repeated progress reports change the status pill, not the log.
    const last = log.lastElementChild;
    if (cls.startsWith("platform") && last && last.className === cls && last.textContent === body) return;
    const li = document.createElement("li");
    li.className = cls;
    li.textContent = body;
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
  };
  const setState = (s, label) => {
    state.dataset.state = s;
    state.textContent = label || s;
  };
  // The durability receipt of the user's last completed sync (a "saved" status frame,
  // or GET /status on connect): the panel says how long ago the workspace was saved.
  let receipt = null;
  const saved = $(".saved-ago");
  const showSaved = () => {
    if (!receipt) { saved.hidden = true; return; }
    const ago = Math.max(0, Math.round((Date.now() - Date.parse(receipt.time)) / 1000));
    saved.hidden = false;
    saved.textContent = `saved ${ago} s ago`;
    saved.title = `generation ${receipt.generation}: ${receipt.files} file${receipt.files === 1 ? "" : "s"}, ${receipt.bytes} bytes\nmanifest sha256 ${receipt.digest}`;
  };
  const takeReceipt = (r) => {
    if (!r || !r.time || (receipt && Date.parse(r.time) < Date.parse(receipt.time))) return;
    receipt = r;
    showSaved();
  };
  setInterval(showSaved, 1000);
  const connected = (on) => {
    $(".connect").disabled = on;
    user.disabled = on;
    for (const b of [".disconnect", ".text", ".note", ".echo", ".notes", ".restart"]) $(b).disabled = !on;
  };
  const send = (frame) => {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(frame);
    add("out", frame);
  };

  // Platform frames (type sandgate.*) report the sandbox; everything else is the workload's.
  const receive = (data) => {
    let f = null;
    try { f = JSON.parse(data); } catch { /* not JSON: the workload's own text */ }
    if (f && typeof f.type === "string" && f.type.startsWith("sandgate.")) {
      if (f.type === "sandgate.status" && f.state === "saved") {
        // Not a step of the sandbox's life: the pill keeps its state.
        takeReceipt(f.receipt);
        if (f.receipt) add("platform saved", `saved: ${f.receipt.files} file${f.receipt.files === 1 ? "" : "s"}, ${f.receipt.bytes} bytes (generation ${f.receipt.generation}, sha256 ${f.receipt.digest.slice(0, 12)}…)`);
      } else if (f.type === "sandgate.status") {
        let label = f.state;
        if (f.state === "restoring" && f.progress && f.progress.totalFiles) {
          label = `restoring ${f.progress.files}/${f.progress.totalFiles} files`;
        }
        if (f.queued) label += ` · ${f.queued} queued`;
        if (f.state === "starting" && startedAt === null) startedAt = performance.now();
        setState(f.state, label);
        add("platform", `sandbox ${label}`);
        if (f.state === "ready" && startedAt !== null) {
          const took = ((performance.now() - startedAt) / 1000).toFixed(1);
          setState("ready", `ready · ${took} s`);
          add("platform timing", `connect → ready: ${took} s`);
          startedAt = null;
        }
      } else if (f.type === "sandgate.error") {
        setState("error", `error: ${f.reason}`);
        add("platform error", `${f.reason}${f.message ? ": " + f.message : ""}`);
      }
      return;
    }
    if (f && f.type === "hello") return add("in", `workload: hello (${f.notes} notes stored)`);
    if (f && f.type === "note.saved") return add("in", `saved note #${f.count}`);
    if (f && f.type === "notes") return add("in", f.notes.length ? "notes:\n• " + f.notes.join("\n• ") : "no notes yet");
    add("in", data);
  };

  $(".connect").onclick = async () => {
    startedAt = performance.now();
    setState("connecting");
    const r = await fetch(`/dev/sign?userId=${encodeURIComponent(user.value)}`);
    const body = await r.json();
    if (!r.ok) { setState("error", "error: bad user id"); add("platform error", body.error); return; }
    ws = new WebSocket(body.url);
    // The last receipt so far, if the HTTP API lets this page read it (its CORS origins).
    fetch(body.status).then((r) => (r.ok ? r.json() : null)).then((st) => st && takeReceipt(st.receipt)).catch(() => {});
    ws.onopen = () => { connected(true); setState("connecting", "connected"); add("platform", `connected as ${user.value}`); };
    ws.onmessage = (ev) => receive(typeof ev.data === "string" ? ev.data : "(binary frame)");
    ws.onclose = (ev) => {
      connected(false);
      setState("disconnected");
      add("platform", `disconnected (${ev.code}${ev.reason ? " " + ev.reason : ""})`);
      ws = null;
    };
  };
  $(".disconnect").onclick = () => ws && ws.close(1000, "bye");
  $(".compose").onsubmit = (ev) => {
    ev.preventDefault();
    if (!text.value.trim()) return;
    send(JSON.stringify({ type: "note", text: text.value.trim() }));
    text.value = "";
  };
  $(".echo").onclick = () => { if (text.value) { send(text.value); text.value = ""; } };
  $(".notes").onclick = () => send(JSON.stringify({ type: "notes" }));
  $(".restart").onclick = async () => {
    const r = await fetch(`/dev/restart?userId=${encodeURIComponent(user.value)}`, { method: "POST" });
    const body = await r.json();
    add("platform", r.ok ? "restart requested: the sandbox syncs and stops; the next frame starts a new one" : body.error);
  };
  $(".files").onclick = async () => {
    const r = await fetch(`/dev/files?userId=${encodeURIComponent(user.value)}`);
    const body = await r.json();
    const pre = $(".stored");
    pre.hidden = false;
    pre.textContent = r.ok ? `${body.prefix}\n` + (body.keys.length ? body.keys.map((k) => "  " + k).join("\n") : "  (nothing stored yet)") : body.error;
  };
}

document.querySelectorAll(".panel").forEach(setup);

// The operator panel: internal/admin through the local stack's dev-only endpoints, the
// same operations make admin runs.
function operator(section) {
  const body = section.querySelector(".sandboxes tbody");
  const report = section.querySelector(".report");
  const all = section.querySelector(".all");
  const age = (since) => {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(since)) / 1000));
    return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${s % 60}s`;
  };
  const show = (text) => { report.hidden = false; report.textContent = text; };
  // call answers an endpoint's JSON, or throws an error that says what failed: the
  // endpoint's own error, or the status and body of an answer that is not JSON.
  const call = async (url, init) => {
    const r = await fetch(url, init);
    const text = await r.text();
    let out;
    try { out = JSON.parse(text); } catch { throw new Error(`${r.status} ${r.statusText}: ${text.slice(0, 200)}`); }
    if (!r.ok) throw new Error(out.error || `${r.status} ${r.statusText}`);
    return out;
  };
  const act = async (method, path, user) => {
    show(`${path} ${user}: …`);
    try {
      show(`${path} ${user}: ` + JSON.stringify(await call(`/dev/admin/${path}?userId=${encodeURIComponent(user)}`, { method }), null, 2));
    } catch (e) {
      show(`${path} ${user}: ${e.message}`);
    }
    refresh();
  };
  // A failed refresh says why and keeps the last table: an operator must not mistake
  // an error for an empty stack.
  const listError = section.querySelector(".list-error");
  const failed = (msg) => { listError.hidden = !msg; listError.textContent = msg ? `list failed: ${msg}` : ""; };
  const cell = (tr, text, cls) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  };
  // One list at a time: a slow answer must not land after a newer one.
  let listing = null;
  const refresh = () => (listing ??= load().finally(() => { listing = null; }));
  const load = async () => {
    let out;
    try {
      out = await call(`/dev/admin/list?all=${all.checked}`);
    } catch (e) {
      failed(e.message);
      return;
    }
    failed("");
    body.replaceChildren();
    for (const s of out.sandboxes) {
      const tr = document.createElement("tr");
      tr.dataset.user = s.userId;
      cell(tr, s.userId);
      cell(tr, s.state + (s.expired ? " (lease expired)" : "") + (s.warm ? " warm" : ""), s.expired ? "expired" : "");
      cell(tr, String(s.generation));
      cell(tr, s.since ? age(s.since) : "-");
      cell(tr, s.taskStatus || "-");
      cell(tr, s.lastSync ? age(s.lastSync) + " ago" : "-");
      cell(tr, String(s.connections));
      cell(tr, String(s.queued));
      const td = document.createElement("td");
      for (const [label, method, path] of [["inspect", "GET", "inspect"], ["stop", "POST", "stop"], ["revoke", "POST", "revoke"]]) {
        const b = document.createElement("button");
        b.className = `secondary ${path}`;
        b.textContent = label;
        b.onclick = () => act(method, path, s.userId);
        td.appendChild(b);
      }
      tr.appendChild(td);
      body.appendChild(tr);
    }
  };
  all.onchange = refresh;
  refresh();
  setInterval(refresh, 2000);
}

document.querySelectorAll(".operator").forEach(operator);
