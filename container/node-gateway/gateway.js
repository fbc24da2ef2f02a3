'use strict';
// An agent gateway for one user, as sandgate runs it: the user's settings and
// conversations in the workspace (the only thing that persists), replies from a model
// API streamed to the client as several frames, and the model's key never held — the
// agent's reverse proxy adds it (SANDGATE_UPSTREAM_MODEL_URL). docs/WORKLOADS.md is the
// contract this follows; README.md here, the frames it speaks.

const fs = require('node:fs');
const fsp = require('node:fs/promises');
const http = require('node:http');
const path = require('node:path');
const { handleUpgrade } = require('./websocket');

const DEFAULT_SETTINGS = Object.freeze({ model: 'claude-sonnet-4-5', system: '', maxTokens: 1024 });
// The Messages API version the gateway speaks.
const ANTHROPIC_VERSION = '2023-06-01';
const MAX_TEXT = 32 << 10;
const CONVERSATION_ID = /^[A-Za-z0-9_-]{1,64}$/;

// Store keeps one user's settings and conversations under dir, each a JSON file written
// whole and renamed into place, so a stop at any moment leaves the last complete one.
class Store {
  constructor(dir) {
    this.dir = path.join(dir, 'gateway');
    this.queue = Promise.resolve(); // writes one at a time, in order
    fs.mkdirSync(path.join(this.dir, 'conversations'), { recursive: true, mode: 0o700 });
  }

  _read(file, fallback) {
    try {
      return JSON.parse(fs.readFileSync(path.join(this.dir, file), 'utf8'));
    } catch (err) {
      if (err.code !== 'ENOENT') console.error(`gateway: ${file} unreadable, starting afresh: ${err.message}`);
      return fallback;
    }
  }

  _write(file, value) {
    const p = path.join(this.dir, file);
    const data = JSON.stringify(value, null, 1);
    const run = async () => {
      const tmp = `${p}.tmp-${process.pid}`;
      const fh = await fsp.open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fsp.rename(tmp, p);
    };
    this.queue = this.queue.then(run, run);
    return this.queue;
  }

  settings() {
    return { ...DEFAULT_SETTINGS, ...this._read('settings.json', {}) };
  }

  saveSettings(s) {
    return this._write('settings.json', s);
  }

  conversations() {
    return fs
      .readdirSync(path.join(this.dir, 'conversations'))
      .filter((f) => f.endsWith('.json'))
      .map((f) => f.slice(0, -'.json'.length))
      .sort();
  }

  history(id) {
    return this._read(path.join('conversations', `${id}.json`), []);
  }

  saveHistory(id, messages) {
    return this._write(path.join('conversations', `${id}.json`), messages);
  }

  flush() {
    return this.queue.catch(() => {});
  }
}

// Busy tells the agent the gateway is working while no client may be connected (a
// long model call, a tool run): one POST to SANDGATE_ACTIVITY_URL per interval keeps
// the sandbox from idling, up to its maximum lifetime.
class Busy {
  constructor(url, sleepAfterSeconds) {
    this.url = url;
    this.every = Math.max(1000, Math.min(60000, ((sleepAfterSeconds || 600) * 1000) / 3));
    this.n = 0;
    this.timer = null;
  }

  begin() {
    if (++this.n === 1 && this.url) {
      this.beat();
      this.timer = setInterval(() => this.beat(), this.every);
    }
  }

  end() {
    if (--this.n === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
      this.beat(); // the idle timer starts from the end of the work
    }
  }

  beat() {
    fetch(this.url, { method: 'POST' }).then(
      (r) => r.body?.cancel(),
      (err) => console.error(`gateway: activity: ${err.message}`),
    );
  }
}

// callModel streams one reply from the Messages API through the agent's proxy, calling
// onText with each piece of text as it arrives; it resolves with the whole text and the
// usage.
async function callModel(base, settings, messages, onText, signal) {
  const res = await fetch(`${base}/v1/messages`, {
    method: 'POST',
    signal,
    headers: {
      'content-type': 'application/json',
      'anthropic-version': ANTHROPIC_VERSION,
      // The agent replaces it with the team's key: the gateway has none to send.
      'x-api-key': 'added-by-sandgate',
    },
    body: JSON.stringify({
      model: settings.model,
      max_tokens: settings.maxTokens,
      ...(settings.system ? { system: settings.system } : {}),
      messages: messages.map((m) => ({ role: m.role, content: m.text })),
      stream: true,
    }),
  });
  if (!res.ok) {
    const body = await res.text();
    let message = body.slice(0, 500);
    try {
      message = JSON.parse(body).error.message;
    } catch {}
    const err = new Error(message);
    err.status = res.status;
    err.limit = res.headers.get('x-sandgate-limit') || undefined;
    throw err;
  }
  const usage = { input: 0, output: 0 };
  let text = '';
  let pending = '';
  const decoder = new TextDecoder();
  const onEvent = (raw) => {
    const data = raw
      .split('\n')
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).trim())
      .join('\n');
    if (!data) return;
    const ev = JSON.parse(data);
    if (ev.type === 'message_start') usage.input = ev.message?.usage?.input_tokens ?? 0;
    if (ev.type === 'message_delta') usage.output = ev.usage?.output_tokens ?? usage.output;
    if (ev.type === 'content_block_delta' && ev.delta?.type === 'text_delta') {
      text += ev.delta.text;
      onText(ev.delta.text);
    }
    if (ev.type === 'error') throw new Error(ev.error?.message || 'model error');
  };
  for await (const chunk of res.body) {
    pending += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = pending.indexOf('\n\n')) >= 0) {
      onEvent(pending.slice(0, i));
      pending = pending.slice(i + 2);
    }
  }
  if (pending.trim()) onEvent(pending);
  return { text, usage };
}

// Gateway answers one user's clients.
class Gateway {
  constructor({ workspace, userId, modelURL, busy }) {
    this.store = new Store(workspace);
    this.userId = userId;
    this.modelURL = modelURL;
    this.busy = busy;
    this.locks = new Map(); // conversation → the promise of its last turn
    this.aborts = new Set();
  }

  hello() {
    return { type: 'hello', user: this.userId, settings: this.store.settings(), conversations: this.store.conversations() };
  }

  async handle(frame, send) {
    let msg;
    try {
      msg = JSON.parse(frame);
    } catch {
      return send({ type: 'error', message: 'frames are JSON objects with a "type"' });
    }
    switch (msg && msg.type) {
      case 'settings':
        return this.settings(msg, send);
      case 'history':
        return this.historyOf(msg, send);
      case 'conversations':
        return send({ type: 'conversations', conversations: this.store.conversations() });
      case 'chat':
        return this.chat(msg, send);
      default:
        return send({ type: 'error', message: `unknown frame type ${JSON.stringify(msg && msg.type)}` });
    }
  }

  async settings(msg, send) {
    const s = this.store.settings();
    const set = msg.set || {};
    if (typeof set.model === 'string' && set.model) s.model = set.model.slice(0, 200);
    if (typeof set.system === 'string') s.system = set.system.slice(0, MAX_TEXT);
    if (Number.isInteger(set.maxTokens) && set.maxTokens > 0) s.maxTokens = Math.min(set.maxTokens, 64000);
    if (msg.set) await this.store.saveSettings(s);
    send({ type: 'settings', settings: s });
  }

  historyOf(msg, send) {
    const id = msg.conversation || 'default';
    if (!CONVERSATION_ID.test(id)) return send({ type: 'error', message: 'bad conversation id' });
    send({ type: 'history', conversation: id, messages: this.store.history(id) });
  }

  // chat takes one turn: the user's message saved, the model's reply streamed as
  // chat.delta frames in order (seq 0, 1, …), then saved and ended with chat.done. Turns
  // of one conversation run one after another.
  chat(msg, send) {
    const id = msg.conversation || 'default';
    const rid = String(msg.id || '');
    if (!CONVERSATION_ID.test(id)) return send({ type: 'chat.error', id: rid, message: 'bad conversation id' });
    if (typeof msg.text !== 'string' || !msg.text || msg.text.length > MAX_TEXT) {
      return send({ type: 'chat.error', id: rid, message: 'text must be 1 to 32768 characters' });
    }
    const prev = this.locks.get(id) || Promise.resolve();
    const turn = prev.then(() => this.turn(id, rid, msg.text, send));
    this.locks.set(id, turn.catch(() => {}));
    return turn;
  }

  async turn(id, rid, text, send) {
    const history = this.store.history(id);
    history.push({ role: 'user', text, at: new Date().toISOString() });
    await this.store.saveHistory(id, history);
    if (!this.modelURL) {
      return send({ type: 'chat.error', id: rid, conversation: id, status: 503, message: 'no model API is configured (SANDGATE_UPSTREAM_MODEL_URL)' });
    }
    send({ type: 'chat.start', id: rid, conversation: id });
    const abort = new AbortController();
    this.aborts.add(abort);
    this.busy.begin();
    let seq = 0;
    try {
      const settings = this.store.settings();
      const reply = await callModel(this.modelURL, settings, history, (t) => send({ type: 'chat.delta', id: rid, seq: seq++, text: t }), abort.signal);
      history.push({ role: 'assistant', text: reply.text, at: new Date().toISOString() });
      await this.store.saveHistory(id, history);
      send({ type: 'chat.done', id: rid, conversation: id, text: reply.text, deltas: seq, usage: reply.usage });
    } catch (err) {
      console.error(`gateway: model call failed: ${err.status || ''} ${err.message}`);
      send({ type: 'chat.error', id: rid, conversation: id, status: err.status || 502, limit: err.limit, message: err.message });
    } finally {
      this.aborts.delete(abort);
      this.busy.end();
    }
  }

  async stop() {
    for (const a of this.aborts) a.abort();
    await Promise.all([...this.locks.values()]);
    await this.store.flush();
  }
}

function main() {
  const env = process.env;
  const workspace = env.SANDGATE_WORKSPACE || process.cwd();
  const gw = new Gateway({
    workspace,
    userId: env.SANDGATE_USER_ID || '',
    modelURL: env.SANDGATE_UPSTREAM_MODEL_URL || '',
    busy: new Busy(env.SANDGATE_ACTIVITY_URL, Number(env.SANDGATE_SLEEP_AFTER)),
  });
  const server = http.createServer((req, res) => {
    res.writeHead(req.url === '/healthz' ? 200 : 426, { 'content-type': 'text/plain' });
    res.end(req.url === '/healthz' ? 'ok\n' : 'WebSocket only\n');
  });
  const conns = new Set();
  server.on('upgrade', (req, socket, head) => {
    const ws = handleUpgrade(req, socket, head, { maxMessage: 256 << 10 });
    if (!ws) return;
    conns.add(ws);
    const send = (v) => ws.send(JSON.stringify(v));
    send(gw.hello());
    ws.on('message', (data) => {
      if (typeof data !== 'string') return send({ type: 'error', message: 'text frames only' });
      gw.handle(data, send).catch((err) => send({ type: 'error', message: err.message }));
    });
    ws.on('close', () => conns.delete(ws));
    ws.on('error', () => {});
  });
  server.listen(Number(env.PORT || 8081), env.HOST || '127.0.0.1', () => {
    console.error(`gateway: serving ${env.SANDGATE_USER_ID || 'a user'} on ${env.HOST || '127.0.0.1'}:${env.PORT || 8081}`);
  });
  // SIGTERM: the agent gives WORKLOAD_GRACE (10 s) to save; then the final sync.
  process.on('SIGTERM', async () => {
    server.close();
    for (const ws of conns) ws.close(1001, 'stopping');
    await gw.stop();
    process.exit(0);
  });
}

module.exports = { Gateway, Store, Busy, callModel };

if (require.main === module) main();
