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
      if (f.type === "sandgate.status") {
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
