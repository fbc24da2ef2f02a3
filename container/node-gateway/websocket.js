'use strict';
// A WebSocket server (RFC 6455) in plain Node, enough for what sandgate's agent opens:
// one connection per client, text and binary messages, fragmentation, ping/pong and the
// close handshake; no extensions, no subprotocols. A small client is here too, for the
// tests. Node's built-ins only, so the example has no dependency to vet or update.

const crypto = require('node:crypto');
const http = require('node:http');
const { EventEmitter } = require('node:events');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa };
// A message larger than this closes the connection (1009): the agent's frames are at
// most 128 KiB (API Gateway's limit).
const DEFAULT_MAX_MESSAGE = 1 << 20;

function acceptKey(key) {
  return crypto.createHash('sha1').update(key + GUID).digest('base64');
}

// encodeFrame builds one frame; a client masks it (RFC 6455 5.3), a server does not.
function encodeFrame(opcode, payload, mask = false, fin = true) {
  const len = payload.length;
  let headerLen = 2 + (len < 126 ? 0 : len < 65536 ? 2 : 8) + (mask ? 4 : 0);
  const header = Buffer.alloc(headerLen);
  header[0] = (fin ? 0x80 : 0) | opcode;
  let off = 2;
  if (len < 126) {
    header[1] = len;
  } else if (len < 65536) {
    header[1] = 126;
    header.writeUInt16BE(len, 2);
    off = 4;
  } else {
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(len), 2);
    off = 10;
  }
  if (!mask) return Buffer.concat([header, payload]);
  header[1] |= 0x80;
  const key = crypto.randomBytes(4);
  key.copy(header, off);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= key[i & 3];
  return Buffer.concat([header, body]);
}

// Connection is one WebSocket, either side. Events: 'message' (data: string for text,
// Buffer for binary), 'close' (code, reason), 'error'.
class Connection extends EventEmitter {
  constructor(socket, { client = false, maxMessage = DEFAULT_MAX_MESSAGE, head } = {}) {
    super();
    this.socket = socket;
    this.client = client; // a client masks what it sends; a server wants masked frames
    this.maxMessage = maxMessage;
    this.buf = head && head.length ? Buffer.from(head) : Buffer.alloc(0);
    this.fragments = null; // { opcode, parts, size } while a message is fragmented
    this.closed = false;
    this.closeSent = false;
    this.decoder = new TextDecoder('utf-8', { fatal: true });
    socket.setNoDelay(true);
    socket.on('data', (d) => this._data(d));
    // A reset socket ends the connection ('close', 1006); 'error' is for who listens.
    socket.on('error', (err) => this.listenerCount('error') && this.emit('error', err));
    socket.on('close', () => this._ended(1006, ''));
    if (this.buf.length) setImmediate(() => this._data(Buffer.alloc(0)));
  }

  send(data) {
    if (this.closeSent || this.socket.destroyed) return false;
    const isText = typeof data === 'string';
    const payload = isText ? Buffer.from(data, 'utf8') : data;
    return this.socket.write(encodeFrame(isText ? OP.TEXT : OP.BINARY, payload, this.client));
  }

  close(code = 1000, reason = '') {
    if (this.closeSent || this.socket.destroyed) return;
    this.closeSent = true;
    const r = Buffer.from(reason, 'utf8').subarray(0, 123);
    const p = Buffer.alloc(2 + r.length);
    p.writeUInt16BE(code, 0);
    r.copy(p, 2);
    this.socket.write(encodeFrame(OP.CLOSE, p, this.client));
    // The peer answers with its close frame; do not wait for ever.
    this._closeTimer = setTimeout(() => this.socket.destroy(), 2000);
    this._closeTimer.unref();
  }

  _fail(code, reason) {
    this.close(code, reason);
    this.socket.end();
  }

  _ended(code, reason) {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this._closeTimer);
    this.emit('close', code, reason);
  }

  _data(chunk) {
    if (chunk.length) this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    while (!this.closed) {
      const f = this._frame();
      if (!f) return;
      this._handle(f);
    }
  }

  // _frame takes one whole frame off the buffer, or returns null until one is there.
  _frame() {
    const b = this.buf;
    if (b.length < 2) return null;
    const fin = (b[0] & 0x80) !== 0;
    if (b[0] & 0x70) {
      this._fail(1002, 'reserved bits set');
      return null;
    }
    const opcode = b[0] & 0x0f;
    const masked = (b[1] & 0x80) !== 0;
    let len = b[1] & 0x7f;
    let off = 2;
    if (len === 126) {
      if (b.length < 4) return null;
      len = b.readUInt16BE(2);
      off = 4;
    } else if (len === 127) {
      if (b.length < 10) return null;
      const big = b.readBigUInt64BE(2);
      if (big > BigInt(this.maxMessage)) {
        this._fail(1009, 'message too big');
        return null;
      }
      len = Number(big);
      off = 10;
    }
    if (masked === this.client) {
      // A server must get masked frames, a client unmasked ones.
      this._fail(1002, masked ? 'masked frame from a server' : 'unmasked frame from a client');
      return null;
    }
    if (len > this.maxMessage) {
      this._fail(1009, 'message too big');
      return null;
    }
    const need = off + (masked ? 4 : 0) + len;
    if (b.length < need) return null;
    let payload = b.subarray(off + (masked ? 4 : 0), need);
    if (masked) {
      const key = b.subarray(off, off + 4);
      payload = Buffer.from(payload);
      for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
    }
    this.buf = b.subarray(need);
    return { fin, opcode, payload };
  }

  _handle({ fin, opcode, payload }) {
    if (opcode >= 0x8) {
      if (!fin || payload.length > 125) return this._fail(1002, 'bad control frame');
      if (opcode === OP.PING) {
        if (!this.closeSent) this.socket.write(encodeFrame(OP.PONG, payload, this.client));
      } else if (opcode === OP.CLOSE) {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        const reason = payload.length > 2 ? payload.subarray(2).toString('utf8') : '';
        if (!this.closeSent) this.close(code === 1005 ? 1000 : code, '');
        this.socket.end();
        this._ended(code, reason);
      }
      return;
    }
    if (opcode === OP.CONT) {
      if (!this.fragments) return this._fail(1002, 'continuation without a message');
    } else if (opcode === OP.TEXT || opcode === OP.BINARY) {
      if (this.fragments) return this._fail(1002, 'a new message inside a fragmented one');
      this.fragments = { opcode, parts: [], size: 0 };
    } else {
      return this._fail(1002, 'unknown opcode');
    }
    const fr = this.fragments;
    fr.parts.push(payload);
    fr.size += payload.length;
    if (fr.size > this.maxMessage) return this._fail(1009, 'message too big');
    if (!fin) return;
    this.fragments = null;
    const data = Buffer.concat(fr.parts, fr.size);
    if (fr.opcode === OP.BINARY) return this.emit('message', data);
    let text;
    try {
      text = this.decoder.decode(data);
    } catch {
      return this._fail(1007, 'invalid UTF-8');
    }
    this.emit('message', text);
  }
}

// handleUpgrade completes the server's side of the handshake on an http 'upgrade' and
// returns the Connection, or answers 400 and returns null.
function handleUpgrade(req, socket, head, opts) {
  const key = req.headers['sec-websocket-key'];
  const upgrade = (req.headers.upgrade || '').toLowerCase();
  if (req.method !== 'GET' || upgrade !== 'websocket' || !key || req.headers['sec-websocket-version'] !== '13') {
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return null;
  }
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\n' +
      'Upgrade: websocket\r\n' +
      'Connection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${acceptKey(key)}\r\n\r\n`,
  );
  return new Connection(socket, { ...opts, head });
}

// connect opens a client connection to a ws:// URL (the tests' client).
function connect(url, { headers = {}, maxMessage } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const key = crypto.randomBytes(16).toString('base64');
    const req = http.request({
      host: u.hostname,
      port: u.port,
      path: u.pathname + u.search,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Key': key,
        'Sec-WebSocket-Version': '13',
        ...headers,
      },
    });
    req.on('upgrade', (res, socket, head) => {
      if (res.headers['sec-websocket-accept'] !== acceptKey(key)) {
        socket.destroy();
        return reject(new Error('bad Sec-WebSocket-Accept'));
      }
      resolve(new Connection(socket, { client: true, maxMessage, head }));
    });
    req.on('response', (res) => reject(new Error(`handshake refused: ${res.statusCode}`)));
    req.on('error', reject);
    req.end();
  });
}

module.exports = { Connection, handleUpgrade, connect, encodeFrame, acceptKey, OP };
