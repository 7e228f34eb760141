#!/usr/bin/env node
// raw.mjs: scripted raw-protocol client for the Jetstream Sync wire protocol.
//
//   node raw.mjs --url ws://127.0.0.1:PORT/jetstream --script golden/handshake.json
//        [--messages] [--no-normalise] [--timeout MS]
//
// Sends a scripted list of frames over one or more WebSocket connections and
// prints, as JSON lines, everything that happens: opens, frames sent, frames
// received, close code/reason. Session tokens become <token:N> and UUIDs that
// the server generated become <uuid:N> (numbered by first appearance in the
// output); UUIDs written literally in the script are kept as they are.
//
// The WebSocket client is a small hand-written RFC 6455 client over node:net
// (no dependency, no --experimental-websocket), so it can send any header
// (X-Jetstream-SessionToken), drop a TCP connection without a close frame, and
// report a close frame exactly as the server sent it, even an invalid one (the
// reference server's 4096 close carries a reason longer than the 123 bytes a
// close frame may hold; browsers/undici/ws then report 1006/1002 instead).
//
// Script format (JSON): {"description": "...", "steps": [STEP, ...]}; a bare
// array of steps is accepted too. Every step names its connection with
// "conn" (default "a"). Strings in frames, headers, paths and queries may use
// ${var} for values captured with "save".
//   {"connect": "a", "path": "/x", "query": "k=v", "headers": {...}}
//        open a connection (URL path from --url unless "path" is given);
//        waits for the upgrade; prints open or the HTTP status.
//   {"send": <JSON value>}           send JSON.stringify(value) as one text frame
//   {"send": "<text>", "raw": true}  send text verbatim
//   {"expect": <pattern>, "timeout": 3000, "save": {"var": "path.in.message"}}
//        wait for a received message (frames that are arrays are searched
//        element by element) that matches <pattern> (objects: subset match,
//        arrays: same length and element-wise match, scalars: ===).
//   {"expectClose": "a", "code": 4096, "timeout": 3000}   wait for the close
//   {"quiet": 500, "conn": "a"}      fail if anything arrives within 500 ms
//                                    (on "conn", or on any connection if omitted)
//   {"wait": 200}                    sleep
//   {"drop": "a"}                    destroy the TCP socket, no close frame
//   {"close": "a", "code": 1000, "reason": ""}   send a close frame
//   {"comment": "..."}               ignored
//
// Output events (one JSON object per line):
//   {"ev":"connect","conn":"a","path":"/..","headers":{..}}
//   {"ev":"open","conn":"a"} | {"ev":"http","conn":"a","status":N}
//   {"ev":"sent","conn":"a","frame":...}
//   {"ev":"recv","conn":"a","frame":...}            (--messages: {"ev":"msg","conn":"a","msg":...} per message)
//   {"ev":"close","conn":"a","code":N,"reason":"..","reasonBytes":N}
//        (code 1006 + "abnormal":true when TCP closed without a close frame;
//         "invalidControlFrame":true when the close payload exceeded 125 bytes)
//   {"ev":"fail","step":i,"reason":".."}            then exit 1
//   {"ev":"done"}                                   exit 0
// Received events are buffered per connection and printed when a step
// concerns that connection (at its end; before a send/drop/close on it), and
// for all connections, in creation order, at the end of the script or on a
// failure. So the output does not depend on how frames of different
// connections interleave in time, as long as the script waits
// (expect/expectClose/quiet) for everything it provokes.

import net from 'node:net';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { pathToFileURL } from 'node:url';

const UUID_RE = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;

// ---------------------------------------------------------------------------
// Minimal RFC 6455 client

class RawSocket {
  constructor({ host, port, path, headers, onFrame, onClose, onOpen, onHttp }) {
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.onOpen = onOpen;
    this.onHttp = onHttp;
    this.buf = Buffer.alloc(0);
    this.upgraded = false;
    this.closed = false;
    this.fragments = null;
    this.sentClose = false;
    const key = crypto.randomBytes(16).toString('base64');
    this.expectedAccept = crypto.createHash('sha1')
      .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    this.sock = net.connect({ host, port });
    this.sock.setNoDelay(true);
    this.sock.on('connect', () => {
      const lines = [
        `GET ${path} HTTP/1.1`,
        `Host: ${host}:${port}`,
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${key}`,
        'Sec-WebSocket-Version: 13',
      ];
      for (const [k, v] of Object.entries(headers || {})) lines.push(`${k}: ${v}`);
      this.sock.write(lines.join('\r\n') + '\r\n\r\n');
    });
    this.sock.on('data', (d) => this._onData(d));
    this.sock.on('error', (e) => { this.lastError = e.message; });
    this.sock.on('close', () => this._finish(1006, '', { abnormal: true, error: this.lastError }));
  }

  _finish(code, reason, extra) {
    if (this.closed) return;
    this.closed = true;
    this.onClose(code, reason, extra || {});
  }

  _onData(d) {
    this.buf = Buffer.concat([this.buf, d]);
    if (!this.upgraded) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = this.buf.subarray(0, end).toString('latin1');
      this.buf = this.buf.subarray(end + 4);
      const status = Number((head.split('\r\n')[0].split(' ')[1]) || 0);
      if (status !== 101) {
        this.onHttp(status);
        this.closed = true; // report as http, not as close
        this.sock.destroy();
        return;
      }
      const m = /sec-websocket-accept:\s*(\S+)/i.exec(head);
      if (!m || m[1] !== this.expectedAccept) {
        this.onHttp(status, 'bad Sec-WebSocket-Accept');
      }
      this.upgraded = true;
      this.onOpen();
    }
    this._parseFrames();
  }

  _parseFrames() {
    for (;;) {
      if (this.buf.length < 2) return;
      const b0 = this.buf[0], b1 = this.buf[1];
      const fin = (b0 & 0x80) !== 0;
      const opcode = b0 & 0x0f;
      const masked = (b1 & 0x80) !== 0;
      let len = b1 & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2); off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2)); off = 10;
      }
      let mask = null;
      if (masked) {
        if (this.buf.length < off + 4) return;
        mask = this.buf.subarray(off, off + 4); off += 4;
      }
      if (this.buf.length < off + len) return;
      let payload = Buffer.from(this.buf.subarray(off, off + len));
      this.buf = this.buf.subarray(off + len);
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      this._onFrame(fin, opcode, payload);
    }
  }

  _onFrame(fin, opcode, payload) {
    if (opcode === 0x8) {
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      const reason = payload.length > 2 ? payload.subarray(2).toString('utf8') : '';
      const extra = { reasonBytes: Math.max(0, payload.length - 2) };
      if (payload.length > 125) extra.invalidControlFrame = true;
      if (!this.sentClose) {
        // Echo the status code as RFC 6455 5.5.1 asks.
        this._sendFrame(0x8, payload.length >= 2 ? payload.subarray(0, 2) : Buffer.alloc(0));
        this.sentClose = true;
      }
      this._finish(code, reason, extra);
      setTimeout(() => this.sock.destroy(), 200).unref();
      return;
    }
    if (opcode === 0x9) { this._sendFrame(0xA, payload); return; }
    if (opcode === 0xA) return;
    if (opcode === 0x1 || opcode === 0x2) {
      this.fragments = { opcode, parts: [payload] };
    } else if (opcode === 0x0 && this.fragments) {
      this.fragments.parts.push(payload);
    }
    if (fin && this.fragments) {
      const data = Buffer.concat(this.fragments.parts);
      const op = this.fragments.opcode;
      this.fragments = null;
      this.onFrame(op === 0x1 ? data.toString('utf8') : data);
    }
  }

  _sendFrame(opcode, payload) {
    if (this.sock.destroyed) return;
    const mask = crypto.randomBytes(4);
    const len = payload.length;
    let head;
    if (len < 126) {
      head = Buffer.from([0x80 | opcode, 0x80 | len]);
    } else if (len < 65536) {
      head = Buffer.alloc(4); head[0] = 0x80 | opcode; head[1] = 0x80 | 126; head.writeUInt16BE(len, 2);
    } else {
      head = Buffer.alloc(10); head[0] = 0x80 | opcode; head[1] = 0x80 | 127; head.writeBigUInt64BE(BigInt(len), 2);
    }
    const body = Buffer.from(payload);
    for (let i = 0; i < body.length; i++) body[i] ^= mask[i & 3];
    this.sock.write(Buffer.concat([head, mask, body]));
  }

  sendText(text) { this._sendFrame(0x1, Buffer.from(text, 'utf8')); }

  close(code, reason) {
    const r = Buffer.from(reason || '', 'utf8');
    const p = Buffer.alloc(2 + r.length);
    p.writeUInt16BE(code, 0); r.copy(p, 2);
    this.sentClose = true;
    this._sendFrame(0x8, p);
  }

  drop() { this.sock.destroy(); }
}

// ---------------------------------------------------------------------------
// Normalisation

export class Normaliser {
  constructor(keepUUIDs, enabled = true) {
    this.keep = new Set([...keepUUIDs].map((u) => u.toLowerCase()));
    this.tokens = new Map();
    this.uuids = new Map();
    this.enabled = enabled;
  }
  registerToken(tok) {
    if (typeof tok === 'string' && tok.length && !this.tokens.has(tok)) {
      this.tokens.set(tok, `<token:${this.tokens.size + 1}>`);
    }
  }
  str(s) {
    if (!this.enabled) return s;
    for (const [tok, ph] of this.tokens) if (s.includes(tok)) s = s.split(tok).join(ph);
    return s.replace(UUID_RE, (u) => {
      const k = u.toLowerCase();
      if (this.keep.has(k)) return u;
      if (!this.uuids.has(k)) this.uuids.set(k, `<uuid:${this.uuids.size + 1}>`);
      return this.uuids.get(k);
    });
  }
  value(v) {
    if (typeof v === 'string') return this.str(v);
    if (Array.isArray(v)) return v.map((x) => this.value(x));
    if (v && typeof v === 'object') {
      const o = {};
      for (const [k, x] of Object.entries(v)) o[this.str(k)] = this.value(x);
      return o;
    }
    return v;
  }
}

function scanTokens(norm, v) {
  if (Array.isArray(v)) { v.forEach((x) => scanTokens(norm, x)); return; }
  if (v && typeof v === 'object') {
    if (typeof v.sessionToken === 'string') norm.registerToken(v.sessionToken);
    for (const x of Object.values(v)) scanTokens(norm, x);
  }
}

// ---------------------------------------------------------------------------
// Matching and variables

export function matches(pattern, value) {
  if (pattern === null || typeof pattern !== 'object') return pattern === value;
  if (Array.isArray(pattern)) {
    return Array.isArray(value) && value.length === pattern.length &&
      pattern.every((p, i) => matches(p, value[i]));
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) return false;
  return Object.entries(pattern).every(([k, p]) => matches(p, value[k]));
}

function getPath(obj, path) {
  let cur = obj;
  for (const part of String(path).split('.').filter(Boolean)) {
    if (cur === undefined || cur === null) return undefined;
    cur = cur[/^\d+$/.test(part) ? Number(part) : part];
  }
  return cur;
}

function substitute(v, vars) {
  if (typeof v === 'string') {
    const whole = /^\$\{(\w+)\}$/.exec(v);
    if (whole && whole[1] in vars) return vars[whole[1]];
    return v.replace(/\$\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  }
  if (Array.isArray(v)) return v.map((x) => substitute(x, vars));
  if (v && typeof v === 'object') {
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = substitute(x, vars);
    return o;
  }
  return v;
}

// ---------------------------------------------------------------------------
// Runner

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Run a script. Returns {ok, lines}. `emit(line)` is called with every output
 * line (a JSON string) as it is produced.
 */
export async function runScript(script, { url, messages = false, normalise = true, defaultTimeout = 3000, emit = (l) => process.stdout.write(l + '\n') } = {}) {
  const steps = Array.isArray(script) ? script : script.steps;
  const base = new URL(url);
  const host = base.hostname.replace(/^\[|\]$/g, '');
  const port = Number(base.port || (base.protocol === 'wss:' ? 443 : 80));
  if (base.protocol === 'wss:') throw new Error('wss: is not supported by raw.mjs');
  const basePath = (base.pathname || '/') + (base.search || '');

  const keep = new Set((JSON.stringify(steps).match(UUID_RE) || []));
  const norm = new Normaliser(keep, normalise);
  const vars = {};
  const conns = new Map(); // name -> state
  const lines = [];
  const out = (obj) => {
    const line = JSON.stringify(norm.value(obj));
    lines.push(line);
    emit(line);
  };

  // Print buffered events of the given connections (all when omitted), in
  // connection creation order.
  const flush = (names) => {
    for (const c of conns.values()) {
      if (names && !names.includes(c.name)) continue;
      for (const ev of c.pending) out(ev);
      c.pending = [];
    }
  };

  function openConn(name, step) {
    let path = step.path !== undefined ? substitute(step.path, vars) : basePath;
    if (step.query) {
      const q = substitute(step.query, vars);
      path += (path.includes('?') ? '&' : '?') + q;
    }
    const headers = substitute(step.headers || {}, vars);
    out({ ev: 'connect', conn: name, path, ...(Object.keys(headers).length ? { headers } : {}) });
    const c = {
      name, pending: [], inbox: [], closed: null, opened: false, http: null, received: 0, waiters: new Set(),
    };
    const wake = () => { for (const w of [...c.waiters]) w(); };
    c.sock = new RawSocket({
      host, port, path, headers,
      onOpen: () => { c.opened = true; c.pending.push({ ev: 'open', conn: name }); wake(); },
      onHttp: (status, note) => {
        c.http = status;
        c.pending.push({ ev: 'http', conn: name, status, ...(note ? { note } : {}) });
        wake();
      },
      onFrame: (data) => {
        c.received++;
        let parsed;
        let isJSON = true;
        try { parsed = JSON.parse(data); } catch { isJSON = false; parsed = data; }
        if (isJSON) scanTokens(norm, parsed);
        if (messages && isJSON && Array.isArray(parsed)) {
          for (const m of parsed) c.pending.push({ ev: 'msg', conn: name, msg: m });
        } else if (messages && isJSON) {
          c.pending.push({ ev: 'msg', conn: name, msg: parsed, unbatched: true });
        } else {
          c.pending.push({ ev: 'recv', conn: name, frame: parsed, ...(isJSON ? {} : { notJSON: true }) });
        }
        const list = isJSON ? (Array.isArray(parsed) ? parsed : [parsed]) : [];
        for (const m of list) c.inbox.push({ msg: m, used: false });
        wake();
      },
      onClose: (code, reason, extra) => {
        c.closed = { code, reason };
        const ev = { ev: 'close', conn: name, code, reason };
        if (extra.reasonBytes !== undefined) ev.reasonBytes = extra.reasonBytes;
        if (extra.invalidControlFrame) ev.invalidControlFrame = true;
        if (extra.abnormal) ev.abnormal = true;
        c.pending.push(ev);
        wake();
      },
    });
    conns.set(name, c);
    return c;
  }

  function waitFor(c, pred, timeout) {
    return new Promise((resolve) => {
      const check = () => {
        const r = pred();
        if (r) { cleanup(); resolve(r); }
      };
      const timer = setTimeout(() => { cleanup(); resolve(null); }, timeout);
      const cleanup = () => { clearTimeout(timer); c.waiters.delete(check); };
      c.waiters.add(check);
      check();
    });
  }

  const fail = (i, reason) => {
    flush();
    out({ ev: 'fail', step: i, reason });
    for (const c of conns.values()) c.sock.drop();
    return { ok: false, lines };
  };

  for (let i = 0; i < steps.length; i++) {
    const step = steps[i];
    const name = step.conn || 'a';
    const timeout = step.timeout || defaultTimeout;
    if (step.comment !== undefined && Object.keys(step).length === 1) continue;
    let touched = [name];

    if (step.connect !== undefined) {
      const cname = step.connect || name;
      touched = [cname];
      if (conns.has(cname) && !conns.get(cname).closed) return fail(i, `connection ${cname} already open`);
      const c = openConn(cname, step);
      const r = await waitFor(c, () => c.opened || c.http || c.closed, timeout);
      if (!r) return fail(i, `connect ${cname}: no upgrade within ${timeout} ms`);
      if (step.expectHttp !== undefined && c.http !== step.expectHttp) return fail(i, `connect ${cname}: expected HTTP ${step.expectHttp}`);
      if (step.expectHttp === undefined && !c.opened) { flush(); return fail(i, `connect ${cname}: not upgraded`); }
    } else if (step.send !== undefined) {
      const c = conns.get(name);
      if (!c || c.closed) return fail(i, `send on ${name}: not open`);
      flush([name]);
      const frame = substitute(step.send, vars);
      const text = step.raw ? String(frame) : JSON.stringify(frame);
      out({ ev: 'sent', conn: name, frame: step.raw ? { raw: text } : frame });
      c.sock.sendText(text);
    } else if (step.expect !== undefined) {
      const c = conns.get(name);
      if (!c) return fail(i, `expect on ${name}: no such connection`);
      const pattern = substitute(step.expect, vars);
      const hit = await waitFor(c, () => c.inbox.find((e) => !e.used && matches(pattern, e.msg)) || (c.closed ? { closed: true } : null), timeout);
      if (!hit || hit.closed) {
        return fail(i, `expect on ${name}: ${hit ? 'connection closed' : 'timeout'} waiting for ${JSON.stringify(norm.value(pattern))}`);
      }
      hit.used = true;
      for (const [v, path] of Object.entries(step.save || {})) vars[v] = getPath(hit.msg, path);
    } else if (step.expectClose !== undefined) {
      const cname = step.expectClose || name;
      touched = [cname];
      const c = conns.get(cname);
      if (!c) return fail(i, `expectClose ${cname}: no such connection`);
      const r = await waitFor(c, () => c.closed, timeout);
      if (!r) return fail(i, `expectClose ${cname}: still open after ${timeout} ms`);
      if (step.code !== undefined && r.code !== step.code) { flush(); return fail(i, `expectClose ${cname}: code ${r.code}, expected ${step.code}`); }
    } else if (step.quiet !== undefined) {
      const targets = step.conn ? [conns.get(step.conn)].filter(Boolean) : [...conns.values()];
      touched = targets.map((c) => c.name);
      const before = targets.map((c) => c.received);
      await sleep(step.quiet);
      const moved = targets.filter((c, k) => c.received !== before[k]);
      if (moved.length) { flush(); return fail(i, `quiet: unexpected frame(s) on ${moved.map((c) => c.name).join(',')}`); }
    } else if (step.wait !== undefined) {
      touched = [];
      await sleep(step.wait);
    } else if (step.drop !== undefined) {
      const cname = step.drop || name;
      touched = [cname];
      const c = conns.get(cname);
      if (!c) return fail(i, `drop ${cname}: no such connection`);
      flush([cname]);
      out({ ev: 'dropped', conn: cname });
      c.closed = c.closed || { code: 1006, reason: '', dropped: true };
      c.sock.closed = true; // we report the drop ourselves
      c.sock.drop();
    } else if (step.close !== undefined) {
      const cname = step.close || name;
      touched = [cname];
      const c = conns.get(cname);
      if (!c) return fail(i, `close ${cname}: no such connection`);
      flush([cname]);
      out({ ev: 'closing', conn: cname, code: step.code || 1000 });
      c.sock.close(step.code || 1000, step.reason || '');
      await waitFor(c, () => c.closed, timeout);
    } else {
      return fail(i, `unknown step ${JSON.stringify(step)}`);
    }
    flush(touched);
  }
  flush();
  out({ ev: 'done' });
  for (const c of conns.values()) c.sock.drop();
  return { ok: true, lines };
}

// ---------------------------------------------------------------------------
// CLI

function parseArgs(argv) {
  const a = { messages: false, normalise: true };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--url') a.url = argv[++i];
    else if (k === '--script') a.script = argv[++i];
    else if (k === '--messages') a.messages = true;
    else if (k === '--no-normalise' || k === '--no-normalize') a.normalise = false;
    else if (k === '--timeout') a.timeout = Number(argv[++i]);
    else if (k === '--overall-timeout') a.overall = Number(argv[++i]);
    else throw new Error(`unknown argument ${k}`);
  }
  if (!a.url || !a.script) throw new Error('usage: node raw.mjs --url ws://HOST:PORT/PATH --script FILE.json [--messages] [--no-normalise] [--timeout MS]');
  return a;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  let args;
  try { args = parseArgs(process.argv.slice(2)); } catch (e) { console.error(e.message); process.exit(2); }
  const script = JSON.parse(fs.readFileSync(args.script, 'utf8'));
  const overall = setTimeout(() => {
    process.stdout.write(JSON.stringify({ ev: 'fail', reason: 'overall timeout' }) + '\n');
    process.exit(1);
  }, args.overall || 30000);
  runScript(script, { url: args.url, messages: args.messages, normalise: args.normalise, defaultTimeout: args.timeout || 3000 })
    .then((r) => { clearTimeout(overall); process.exit(r.ok ? 0 : 1); })
    .catch((e) => { console.error(e); process.exit(1); });
}
