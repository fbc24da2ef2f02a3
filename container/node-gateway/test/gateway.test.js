'use strict';
// The gateway as the agent runs it: a child process told HOST, PORT, its workspace and
// where the model proxy and the activity endpoint are, reached over WebSocket.

const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const { spawn } = require('node:child_process');
const { connect, encodeFrame, OP } = require('../websocket');

// A model API as the agent's proxy passes it on: streamed events, several deltas.
function startModel() {
  const seen = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const r = JSON.parse(body);
      seen.push({ headers: req.headers, body: r });
      const users = r.messages.filter((m) => m.role === 'user');
      const reply = `Turn ${users.length}. You said: ${users[users.length - 1].content}.`;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const ev = (name, data) => res.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
      ev('message_start', { type: 'message_start', message: { usage: { input_tokens: 7, output_tokens: 1 } } });
      const parts = reply.match(/.{1,6}/g);
      for (const p of parts) ev('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: p } });
      ev('message_delta', { type: 'message_delta', usage: { output_tokens: 9 } });
      ev('message_stop', { type: 'message_stop' });
      res.end();
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, seen, url: `http://127.0.0.1:${server.address().port}` })));
}

function startActivity() {
  const hits = { n: 0 };
  const server = http.createServer((req, res) => {
    if (req.method === 'POST') hits.n++;
    res.writeHead(204).end();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, hits, url: `http://127.0.0.1:${server.address().port}/v1/activity` })));
}

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startGateway(env) {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(__dirname, '..', 'gateway.js')], {
    env: { HOST: '127.0.0.1', PORT: String(port), ...env },
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  // Ready when the port accepts, as the agent waits for it.
  for (let i = 0; ; i++) {
    try {
      await new Promise((resolve, reject) => {
        const c = net.connect(port, '127.0.0.1', () => c.end(resolve));
        c.on('error', reject);
      });
      break;
    } catch (err) {
      if (i > 200) throw new Error(`gateway never listened: ${stderr}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { url: `ws://127.0.0.1:${port}/`, child, exited, stderr: () => stderr };
}

// frames collects a connection's JSON frames; next waits for one that matches.
function frames(ws) {
  const got = [];
  const waiters = [];
  ws.on('message', (d) => {
    const f = JSON.parse(d);
    const i = waiters.findIndex((w) => w.match(f));
    if (i >= 0) waiters.splice(i, 1)[0].resolve(f);
    else got.push(f);
  });
  return {
    all: got,
    next(match, what = 'a frame') {
      const i = got.findIndex(match);
      if (i >= 0) return Promise.resolve(got.splice(i, 1)[0]);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no ${what} within 10 s; got ${JSON.stringify(got)}`)), 10000);
        waiters.push({ match, resolve: (f) => (clearTimeout(t), resolve(f)) });
      });
    },
  };
}

test('a turn streams in order, is saved, and survives a restart', async (t) => {
  const model = await startModel();
  const activity = await startActivity();
  t.after(() => (model.server.close(), activity.server.close()));
  const workspace = fs.mkdtempSync(path.join(os.tmpdir(), 'gateway-'));
  const env = {
    SANDGATE_WORKSPACE: workspace,
    SANDGATE_USER_ID: 'user_node',
    SANDGATE_UPSTREAM_MODEL_URL: model.url,
    SANDGATE_ACTIVITY_URL: activity.url,
    SANDGATE_SLEEP_AFTER: '600',
  };
  let gw = await startGateway(env);
  let ws = await connect(gw.url);
  let f = frames(ws);
  const hello = await f.next((x) => x.type === 'hello', 'hello');
  assert.equal(hello.user, 'user_node');
  ws.send(JSON.stringify({ type: 'settings', set: { system: 'Be brief.' } }));
  await f.next((x) => x.type === 'settings');
  ws.send(JSON.stringify({ type: 'chat', id: 'r1', text: 'hello there' }));
  const done = await f.next((x) => x.type === 'chat.done', 'chat.done');
  const deltas = f.all.filter((x) => x.type === 'chat.delta');
  assert.ok(deltas.length >= 3, `${deltas.length} deltas`);
  assert.deepEqual(deltas.map((d) => d.seq), deltas.map((_, i) => i));
  assert.equal(deltas.map((d) => d.text).join(''), 'Turn 1. You said: hello there.');
  assert.equal(done.text, 'Turn 1. You said: hello there.');
  assert.deepEqual(done.usage, { input: 7, output: 9 });
  // The gateway sent no key of its own worth having, and said it was busy.
  assert.equal(model.seen[0].headers['x-api-key'], 'added-by-sandgate');
  assert.equal(model.seen[0].body.system, 'Be brief.');
  // Busy at the start of the turn, and once more at its end (posted as it ends).
  for (let i = 0; activity.hits.n < 2 && i < 400; i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(activity.hits.n >= 2, `${activity.hits.n} activity posts`);

  gw.child.kill('SIGTERM');
  assert.deepEqual(await gw.exited, { code: 0, signal: null });

  gw = await startGateway(env);
  t.after(() => gw.child.kill('SIGKILL'));
  ws = await connect(gw.url);
  f = frames(ws);
  const again = await f.next((x) => x.type === 'hello');
  assert.deepEqual(again.conversations, ['default']);
  assert.equal(again.settings.system, 'Be brief.');
  ws.send(JSON.stringify({ type: 'chat', id: 'r2', text: 'and again' }));
  const second = await f.next((x) => x.type === 'chat.done');
  assert.equal(second.text, 'Turn 2. You said: and again.');
  ws.send(JSON.stringify({ type: 'history' }));
  const h = await f.next((x) => x.type === 'history');
  assert.deepEqual(h.messages.map((m) => `${m.role}: ${m.text}`), [
    'user: hello there',
    'assistant: Turn 1. You said: hello there.',
    'user: and again',
    'assistant: Turn 2. You said: and again.',
  ]);
  ws.close();
});

test('without a model API a turn is refused, saying why', async (t) => {
  const workspace = fs.mkdtempSync(path.join(os.tmpdir(), 'gateway-'));
  const gw = await startGateway({ SANDGATE_WORKSPACE: workspace });
  t.after(() => gw.child.kill('SIGKILL'));
  const ws = await connect(gw.url);
  const f = frames(ws);
  ws.send(JSON.stringify({ type: 'chat', id: 'x', text: 'hi' }));
  const e = await f.next((x) => x.type === 'chat.error');
  assert.equal(e.status, 503);
  ws.send('not json');
  assert.match((await f.next((x) => x.type === 'error')).message, /JSON/);
  ws.close();
});

test('the WebSocket server: fragments, ping, and refusals', async (t) => {
  const workspace = fs.mkdtempSync(path.join(os.tmpdir(), 'gateway-'));
  const gw = await startGateway({ SANDGATE_WORKSPACE: workspace });
  t.after(() => gw.child.kill('SIGKILL'));

  // A message in three fragments, a ping between them: answered once, whole.
  const ws = await connect(gw.url);
  const f = frames(ws);
  await f.next((x) => x.type === 'hello');
  const msg = Buffer.from(JSON.stringify({ type: 'conversations' }));
  const pong = new Promise((resolve) => {
    ws.socket.on('data', (d) => {
      if ((d[0] & 0x0f) === OP.PONG) resolve();
    });
  });
  ws.socket.write(encodeFrame(OP.TEXT, msg.subarray(0, 5), true, false));
  ws.socket.write(encodeFrame(OP.PING, Buffer.from('p'), true));
  ws.socket.write(encodeFrame(OP.CONT, msg.subarray(5, 9), true, false));
  ws.socket.write(encodeFrame(OP.CONT, msg.subarray(9), true, true));
  await pong;
  assert.deepEqual((await f.next((x) => x.type === 'conversations')).conversations, []);
  ws.close();

  // An unmasked frame from a client: 1002. A message over the limit: 1009.
  for (const [frame, code] of [
    [encodeFrame(OP.TEXT, Buffer.from('{}'), false), 1002],
    [encodeFrame(OP.TEXT, Buffer.alloc(300 << 10, 0x20), true), 1009],
  ]) {
    const c = await connect(gw.url);
    const closed = new Promise((resolve) => c.on('close', (cd) => resolve(cd)));
    c.socket.write(frame);
    assert.equal(await closed, code);
  }
});
