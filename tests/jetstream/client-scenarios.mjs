#!/usr/bin/env node
// client-scenarios.mjs: drives the REAL bundled Jetstream JS client
// (node_modules/jetstream/client, "jetstream-js" 0.0.1) against a server.
//
//   node --experimental-websocket client-scenarios.mjs <scenario> --url ws://127.0.0.1:PORT/jetstream
//        [--timeout 20000] [--debug]
//
// (Without --experimental-websocket the script re-executes itself with it:
// the client calls the global `WebSocket`, which Node 20 only has behind that
// flag.) Prints exactly one JSON line {"scenario","ok","detail"} on stdout and
// exits 0 (ok) or 1 (failure, including timeout). --debug sets window.DEBUG so
// the client logs to the console (stderr is used for our own progress notes).
//
// Scenarios:
//   two-clients     A and B fetch Canvas; A adds a Shape, B sees it with the
//                   same values; B moves it, A sees that; B deletes it
//                   (detach), A sees it gone.
//   reject-revert   ChatRoom; the client's ChatRoomStatus enum has an extra
//                   value (Archived: 2) the server's enum lacks, so
//                   attributes.status = 2 is rejected by the server's schema
//                   validation: the client reverts it (ChangeSet REVERTED);
//                   then a change set with one rejected and one accepted
//                   fragment ends PARTIALLY_REVERTED with only the rejected
//                   fragment's properties reverted. A fresh client confirms
//                   the server state.
//   resume          A (through an in-process TCP proxy) and B fetch Canvas;
//                   the proxy drops A's TCP connection without a close frame
//                   and holds A's reconnects while B adds/changes shapes and A
//                   adds a shape offline; then the proxy lets A through. A must
//                   end with all of B's changes and B with A's offline shape.
//                   The bundled client reconnects to the same URL and never
//                   sends the session token, so this scenario applies a TEST
//                   SHIM: after the session is created it sets the adapter's
//                   public `url` (read on every connect(),
//                   client/lib/transport/websocket-transport-adapter.js:62) to
//                   <url>?x-jetstream-sessiontoken=<token>. No package file is
//                   changed.
//   resume-no-shim  the same without the shim: what a browser running the
//                   unmodified client gets. Expected to FAIL against the
//                   reference (each reconnect is closed 4096, the client
//                   reconnects at once, forever).
//   atomic          ChatRoom; the client API cannot set `atomic` (Scope
//                   builds every ChangeSet with atomic=false,
//                   client/lib/scope.js:187), so a test listener prepended on
//                   the scope's "changes" event sets changeSet.atomic = true
//                   before the session serialises it (client/lib/session.js:150-156).
//                   The change set renames the room (valid) and sets
//                   status = 2 (invalid). Asserts nothing was applied: every
//                   fragment rejected (REVERTED), B saw no change, a fresh
//                   client sees the old name. Expected to FAIL against the
//                   reference, which ignores `atomic`.
//   fetch-denied    (probe) fetch of an unknown scope "Nope": passes if the
//                   fetch callback gets the error. FAILS against the
//                   reference: its error reply has no scopeIndex, the client's
//                   parser rejects it (client/lib/message/scope-fetch-reply-message.js:34),
//                   session.onMessage(null) throws a TypeError and the
//                   callback is never called.
//   dates           (probe) A adds a ChatRoom User with lastActive = a Date; a
//                   fresh client must read the same instant. FAILS against the
//                   reference: the client sends an ISO string, the server's
//                   ScopeState sends epoch seconds, and the client does
//                   new Date(seconds) (client/lib/model-property.js:147).

import { createRequire } from 'node:module';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

// --- re-exec with --experimental-websocket when the global is missing -------
if (typeof globalThis.WebSocket === 'undefined') {
  const r = spawnSync(process.execPath, ['--experimental-websocket', '--no-warnings', fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status === null ? 1 : r.status);
}

const SCENARIOS = ['two-clients', 'reject-revert', 'resume', 'resume-no-shim', 'atomic', 'fetch-denied', 'dates'];

function parseArgs(argv) {
  const a = { timeout: 20000, debug: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--url') a.url = argv[++i];
    else if (k === '--timeout') a.timeout = Number(argv[++i]);
    else if (k === '--debug') a.debug = true;
    else if (!k.startsWith('--') && !a.scenario) a.scenario = k;
    else throw new Error(`unknown argument ${k}`);
  }
  if (!a.scenario || !SCENARIOS.includes(a.scenario) || !a.url) {
    throw new Error(`usage: node --experimental-websocket client-scenarios.mjs <${SCENARIOS.join('|')}> --url ws://HOST:PORT/PATH [--timeout MS] [--debug]`);
  }
  return a;
}

let args;
try { args = parseArgs(process.argv.slice(2)); } catch (e) {
  process.stdout.write(JSON.stringify({ scenario: process.argv[2] || null, ok: false, detail: e.message }) + '\n');
  process.exit(2);
}

// --- result reporting, always within the timeout -----------------------------
const progress = [];
const note = (s) => { progress.push(s); if (args.debug) process.stderr.write(`[${args.scenario}] ${s}\n`); };
let finished = false;
function finish(ok, detail) {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify({ scenario: args.scenario, ok, detail }) + '\n');
  // Let stdout drain, then leave without waiting for the client's timers/sockets.
  setTimeout(() => process.exit(ok ? 0 : 1), 20);
}
setTimeout(() => finish(false, { error: `timeout after ${args.timeout} ms`, progress }), args.timeout).unref();
const uncaught = [];
process.on('uncaughtException', (err) => {
  // The client throws from socket event handlers on some inputs (e.g. a
  // message it cannot parse reaches session.onMessage as null); record it.
  uncaught.push(String(err && err.stack ? err.stack.split('\n').slice(0, 3).join(' | ') : err));
  note(`uncaught exception in client: ${uncaught[uncaught.length - 1]}`);
});

// --- the real client -----------------------------------------------------------
// client/lib/log.js reads window.DEBUG. Defining `window` also makes node-uuid
// (used by the client for new model UUIDs) look for window.crypto, so give it
// Node's Web Crypto instead of its insecure Math.random fallback.
globalThis.window = { DEBUG: args.debug, crypto: globalThis.crypto };
const require = createRequire(import.meta.url);
const Jetstream = require('jetstream/client');
const Constants = require('jetstream/client/lib/constants');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitUntil(what, pred, ms = 5000, every = 20) {
  const deadline = Date.now() + ms;
  for (;;) {
    let v;
    try { v = pred(); } catch { v = false; }
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(every);
  }
}
function assertEq(what, actual, expected) {
  if (actual !== expected) throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

// Models, declared the way the demo client declares them
// (client/examples/shapes/index.html): Shape/Canvas with a ShapeColors enum.
function hexToColor(hex) {
  hex = parseInt(hex.substr(1), 16);
  const r = (hex >> 16) & 255, g = (hex >> 8) & 255, b = hex & 255, a = 255;
  return ((r << 24) + (g << 16) + (b << 8) + a) >>> 0;
}
const shapeColors = [
  '#1dd2af', '#19b698', '#40d47e', '#2cc36b', '#4aa3df', '#2e8ece',
  '#a66bbe', '#9b50ba', '#3d566e', '#354b60', '#f2ca27', '#f4a62a',
  '#e98b39', '#ec5e00', '#ea6153', '#d14233', '#8c9899',
].reduce((acc, h) => { acc[h] = hexToColor(h); return acc; }, {});

let models = null;
function defineShapesModels() {
  const ShapeColors = Jetstream.enumeration('ShapeColors', Number, shapeColors);
  const Shape = Jetstream.model({
    name: 'Shape',
    definition() {
      this.has('x', Number);
      this.has('y', Number);
      this.has('width', Number, { defaultValue: 100 });
      this.has('height', Number, { defaultValue: 100 });
      this.has('color', ShapeColors, { defaultValue: ShapeColors['#1dd2af'] });
    },
  });
  const Canvas = Jetstream.model('Canvas', function () {
    this.has('name', String);
    this.has('shapes', [Shape]);
  });
  models = { ShapeColors, Shape, Canvas, Root: Canvas, scopeName: 'Canvas' };
}

// ChatRoom models mirroring demos/chat.js, except that the client's
// ChatRoomStatus enum knows one more value than the server's ({Open:0,
// Closed:1}): Archived = 2 passes the client's validation and fails the
// server's ("Not valid type at 'status', should be one of [0,1]").
function defineChatModels() {
  const ChatRoomStatus = Jetstream.enumeration('ChatRoomStatus', Number, { Open: 0, Closed: 1, Archived: 2 });
  const User = Jetstream.model('User', function () {
    this.has('username', String);
    this.has('color', Number);
    this.has('lastActive', Date);
  });
  const Message = Jetstream.model('Message', function () {
    this.has('author', User);
    this.has('postedAt', Date);
    this.has('text', String);
  });
  const ChatRoomAttributes = Jetstream.model('ChatRoomAttributes', function () {
    this.has('status', ChatRoomStatus);
    this.has('topic', String);
    this.has('tintColor', Number);
    this.has('locale', String);
  });
  const ChatRoom = Jetstream.model('ChatRoom', function () {
    this.has('name', String);
    this.has('attributes', ChatRoomAttributes);
    this.has('users', [User]);
    this.has('messages', [Message]);
  });
  models = { ChatRoomStatus, User, Message, ChatRoomAttributes, ChatRoom, Root: ChatRoom, scopeName: 'ChatRoom' };
}

/**
 * Connect one real client and fetch the scope; resolves once the ScopeState
 * has been applied. opts.tokenShim: after the session is created, point the
 * adapter's url at ?x-jetstream-sessiontoken=<token> so reconnects resume.
 */
function connectClient(name, url, opts = {}) {
  return new Promise((resolve, reject) => {
    const transport = Jetstream.transport.WebSocket({ url });
    const scope = Jetstream.scope({ name: models.scopeName });
    const root = new models.Root();
    root.setScopeAndMakeRootModel(scope);
    const client = Jetstream({ transport });
    const c = { name, transport, scope, root, client, session: null, changeSets: [], received: [], opens: 0, closes: [] };

    // Record every change set this client sends and its final state.
    scope.on('changes', (s, changeSet) => {
      const entry = { changeSet, states: [] };
      c.changeSets.push(entry);
      changeSet.on('changeSetStateChanged', (cs, state) => entry.states.push(state));
    });
    // Adapter events fire after the client's own listeners (registered in the
    // Client/Transport constructors), i.e. after the message was applied.
    transport.on('message', (m) => { c.received.push(m ? m.type : null); });
    transport.on('statusChanged', (st) => {
      if (st === Constants.TransportStatus.CONNECTED) c.opens++;
    });
    const origBind = transport._bindSocketEvents.bind(transport);
    // Observe socket closes (code/reason) without changing behaviour.
    transport._bindSocketEvents = function () {
      origBind();
      const sock = this._socket;
      const handler = sock.onclose;
      sock.onclose = (ev) => { c.closes.push({ code: ev.code, reason: ev.reason }); return handler(ev); };
    };

    client.on('sessionDenied', () => reject(new Error(`${name}: session denied`)));
    client.once('session', (session) => {
      c.session = session;
      note(`${name}: session created`);
      if (opts.tokenShim) {
        const u = new URL(url);
        u.searchParams.set('x-jetstream-sessiontoken', session._token);
        transport.url = u.toString();
      }
      let gotState = false;
      const onMsg = (m) => {
        if (m && m.type === 'ScopeState') {
          gotState = true;
          transport.removeListener('message', onMsg);
          note(`${name}: ScopeState applied (root ${root.uuid})`);
          resolve(c);
        }
      };
      transport.on('message', onMsg);
      session.fetch(scope, (err) => {
        if (err) return reject(new Error(`${name}: fetch failed: ${JSON.stringify(err)}`));
        note(`${name}: fetch accepted`);
        if (gotState) return;
      });
    });
    client.connect();
  });
}

const lastState = (entry) => entry && entry.states[entry.states.length - 1];
async function nextChangeSet(c, before, what) {
  const entry = await waitUntil(`${c.name}: change set for ${what}`, () => c.changeSets[before], 3000);
  await waitUntil(`${c.name}: reply for ${what}`, () => entry.states.length > 0, 5000);
  return entry;
}
function shapeSummary(s) {
  return s && { uuid: s.uuid, x: s.get('x'), y: s.get('y'), width: s.get('width'), height: s.get('height'), color: s.get('color') };
}
const findShape = (canvas, uuid) => canvas.get('shapes').filter((s) => s.uuid === uuid)[0];

// --- scenarios ---------------------------------------------------------------

async function twoClients() {
  defineShapesModels();
  const a = await connectClient('A', args.url);
  const b = await connectClient('B', args.url);
  assertEq('A and B share the root UUID', a.root.uuid, b.root.uuid);

  const shape = new models.Shape();
  shape.set({ x: 11, y: 22, width: 33, height: 44, color: models.ShapeColors['#ea6153'] });
  const n0 = a.changeSets.length;
  a.root.get('shapes').push(shape);
  const cs = await nextChangeSet(a, n0, 'add shape');
  assertEq('A add change set state', lastState(cs), Constants.ChangeSetState.COMPLETED);
  const sent = cs.changeSet.syncFragments.map((f) => `${f.type}:${f.clsName}`);
  note(`A sent fragments ${sent.join(',')}`);

  const onB = await waitUntil('B sees the shape', () => findShape(b.root, shape.uuid));
  const expected = { uuid: shape.uuid, x: 11, y: 22, width: 33, height: 44, color: models.ShapeColors['#ea6153'] };
  assertEq('B shape values', JSON.stringify(shapeSummary(onB)), JSON.stringify(expected));
  note('B sees the added shape with the same values');

  const m0 = b.changeSets.length;
  onB.set({ x: 111, y: 222 });
  const cs2 = await nextChangeSet(b, m0, 'move shape');
  assertEq('B move change set state', lastState(cs2), Constants.ChangeSetState.COMPLETED);
  await waitUntil('A sees the move', () => shape.get('x') === 111 && shape.get('y') === 222);
  note('A sees B\'s move');

  const d0 = b.changeSets.length;
  onB.detach();
  const cs3 = await nextChangeSet(b, d0, 'delete shape');
  assertEq('B delete change set state', lastState(cs3), Constants.ChangeSetState.COMPLETED);
  await waitUntil('A sees the delete', () => !findShape(a.root, shape.uuid));
  note('A sees B\'s delete (shape detached)');

  return { shape: expected, fragmentsSentByA: sent, shapesOnA: a.root.get('shapes').length, shapesOnB: b.root.get('shapes').length };
}

async function ensureAttributes(a) {
  let attrs = a.root.get('attributes');
  if (!attrs) {
    attrs = new models.ChatRoomAttributes();
    attrs.set({ status: models.ChatRoomStatus.Open, topic: 'original topic', tintColor: 1, locale: 'en' });
    const n = a.changeSets.length;
    a.root.set('attributes', attrs);
    const cs = await nextChangeSet(a, n, 'create attributes');
    assertEq('create attributes change set state', lastState(cs), Constants.ChangeSetState.COMPLETED);
    note('A created the room attributes');
  }
  return attrs;
}

async function rejectRevert() {
  defineChatModels();
  const a = await connectClient('A', args.url);
  const attrs = await ensureAttributes(a);
  const status0 = attrs.get('status');
  const topic0 = attrs.get('topic');
  const name0 = a.root.get('name');

  // 1. A change the server rejects as a whole.
  let n = a.changeSets.length;
  attrs.set('status', models.ChatRoomStatus.Archived);
  assertEq('local value before the reply', attrs.get('status'), 2);
  const cs1 = await nextChangeSet(a, n, 'status=Archived');
  const reply1 = cs1.changeSet.syncFragments.length;
  assertEq('rejected change set state', lastState(cs1), Constants.ChangeSetState.REVERTED);
  assertEq('status reverted locally', attrs.get('status'), status0);
  note('status=2 rejected and reverted (REVERTED)');
  // The revert is itself a local set(), so the client sends it to the server
  // as a new change set (status back to the original). Wait for it: edits made
  // before it leaves would merge into its fragment and be "reverted" to the
  // rejected value instead.
  const echo1 = await nextChangeSet(a, n + 1, 'revert echo');
  const echo1Desc = { fragments: echo1.changeSet.syncFragments.map((f) => ({ type: f.type, clsName: f.clsName, properties: f.properties })), state: lastState(echo1) };
  note(`revert echoed to the server as ${JSON.stringify(echo1Desc)}`);

  // 2. One rejected and one accepted fragment in the same change set.
  n = a.changeSets.length;
  const newName = `renamed by A ${Date.now()}`;
  attrs.set({ status: models.ChatRoomStatus.Archived, topic: 'should be reverted with status' });
  a.root.set('name', newName);
  const cs2 = await nextChangeSet(a, n, 'status + topic + name');
  assertEq('mixed change set state', lastState(cs2), Constants.ChangeSetState.PARTIALLY_REVERTED);
  assertEq('status reverted locally', attrs.get('status'), status0);
  assertEq('topic (same fragment as status) reverted locally', attrs.get('topic'), topic0);
  assertEq('name (accepted fragment) kept', a.root.get('name'), newName);
  note('mixed change set PARTIALLY_REVERTED; rejected fragment reverted, accepted kept');
  const echo2 = await nextChangeSet(a, n + 1, 'revert echo 2');
  note(`revert echoed as ${JSON.stringify(echo2.changeSet.syncFragments.map((f) => f.properties))} -> ${lastState(echo2)}`);

  // 3. The server agrees.
  const c = await connectClient('C', args.url);
  const cAttrs = c.root.get('attributes');
  assertEq('server status', cAttrs && cAttrs.get('status'), status0);
  assertEq('server topic', cAttrs && cAttrs.get('topic'), topic0);
  assertEq('server name', c.root.get('name'), newName);
  return {
    originalStatus: status0, originalTopic: topic0, originalName: name0, newName,
    step1: { fragments: reply1, state: lastState(cs1), states: cs1.states, revertEcho: echo1Desc },
    step2: { fragments: cs2.changeSet.syncFragments.map((f) => `${f.type}:${f.clsName}:${Object.keys(f.properties).join('+')}`), state: lastState(cs2) },
  };
}

// In-process TCP proxy for A: drop() destroys every live pair without a close
// frame; hold() makes new connections wait (not forwarded) until release().
function startProxy(target) {
  const t = new URL(target);
  const upstreamPort = Number(t.port || 80);
  const upstreamHost = t.hostname.replace(/^\[|\]$/g, '');
  const pairs = new Set();
  const held = [];
  let holding = false;
  let connections = 0;
  const forward = (client, buffered) => {
    const up = net.connect({ host: upstreamHost, port: upstreamPort });
    const pair = { client, up };
    pairs.add(pair);
    up.on('connect', () => { for (const b of buffered) up.write(b); client.pipe(up); up.pipe(client); });
    const kill = () => { pairs.delete(pair); client.destroy(); up.destroy(); };
    up.on('error', kill); client.on('error', kill); up.on('close', kill); client.on('close', kill);
  };
  const server = net.createServer((client) => {
    connections++;
    if (holding) {
      const buffered = [];
      const onData = (d) => buffered.push(d);
      client.on('data', onData);
      client.on('error', () => {});
      held.push({ client, buffered, onData });
    } else {
      forward(client, []);
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    const u = new URL(target);
    u.host = `127.0.0.1:${server.address().port}`;
    resolve({
      url: u.toString(),
      get connections() { return connections; },
      get held() { return held.length; },
      hold() { holding = true; },
      drop() { for (const p of [...pairs]) { pairs.delete(p); p.client.destroy(); p.up.destroy(); } },
      release() {
        holding = false;
        for (const h of held.splice(0)) {
          h.client.removeListener('data', h.onData);
          h.client.pause();
          if (h.client.destroyed) continue;
          forward(h.client, h.buffered);
          h.client.resume();
        }
      },
      close() { server.close(); },
    });
  }));
}

async function resume(withShim) {
  defineShapesModels();
  const proxy = await startProxy(args.url);
  const a = await connectClient('A', proxy.url, { tokenShim: withShim });
  const b = await connectClient('B', args.url);
  note(`A connects through proxy ${proxy.url}${withShim ? ' (token shim on)' : ' (no shim)'}`);

  // Drop A's TCP connection and keep its reconnect attempts waiting.
  proxy.hold();
  proxy.drop();
  note('A\'s TCP connection dropped; reconnects held');
  await waitUntil('A notices the drop', () => a.closes.length >= 1, 3000);
  await waitUntil('A tries to reconnect', () => proxy.held >= 1, 3000);
  note(`A closed with ${JSON.stringify(a.closes[0])} and is reconnecting`);

  // Changes while A is away.
  const s1 = new models.Shape();
  s1.set({ x: 1, y: 1, color: models.ShapeColors['#4aa3df'] });
  let n = b.changeSets.length;
  b.root.get('shapes').push(s1);
  assertEq('B add s1', lastState(await nextChangeSet(b, n, 'add s1')), Constants.ChangeSetState.COMPLETED);
  n = b.changeSets.length;
  s1.set('x', 555);
  assertEq('B move s1', lastState(await nextChangeSet(b, n, 'move s1')), Constants.ChangeSetState.COMPLETED);
  const s2 = new models.Shape();
  s2.set({ x: 2, y: 2 });
  n = b.changeSets.length;
  b.root.get('shapes').push(s2);
  assertEq('B add s2', lastState(await nextChangeSet(b, n, 'add s2')), Constants.ChangeSetState.COMPLETED);
  const newName = `renamed while A was away ${Date.now()}`;
  n = b.changeSets.length;
  b.root.set('name', newName);
  assertEq('B rename', lastState(await nextChangeSet(b, n, 'rename')), Constants.ChangeSetState.COMPLETED);
  note('B made 4 changes (add s1, move s1, add s2, rename canvas)');

  // A change made by A while offline (queued by the client).
  const sa = new models.Shape();
  sa.set({ x: 7, y: 7 });
  const na = a.changeSets.length;
  a.root.get('shapes').push(sa);
  await waitUntil('A queues its offline change', () => a.changeSets.length > na, 2000);
  note('A added shape sa while offline');

  const opensBefore = a.opens;
  proxy.release();
  note('proxy released A\'s reconnect');

  try {
    await waitUntil('A has every change from B', () => {
      const x = findShape(a.root, s1.uuid);
      return x && x.get('x') === 555 && findShape(a.root, s2.uuid) && a.root.get('name') === newName;
    }, withShim ? 8000 : 5000);
    await waitUntil('B has A\'s offline shape', () => findShape(b.root, sa.uuid), 5000);
    const csA = a.changeSets[na];
    await waitUntil('A\'s offline change set is acknowledged', () => csA.states.length > 0, 5000);
    assertEq('A offline change set state', lastState(csA), Constants.ChangeSetState.COMPLETED);
  } catch (e) {
    e.extra = {
      reconnectsThroughProxy: proxy.connections - 1,
      aOpensAfterRelease: a.opens - opensBefore,
      aCloses: a.closes.slice(0, 5),
      aCloseCount: a.closes.length,
      aHasS1: !!findShape(a.root, s1.uuid),
      aName: a.root.get('name'),
      bHasSa: !!findShape(b.root, sa.uuid),
      aUrl: a.transport.url.replace(/sessiontoken=[^&]+/, 'sessiontoken=<token>'),
    };
    throw e;
  } finally {
    // Stop the client's reconnect loop before leaving.
    a.client.disconnect();
    proxy.close();
  }
  return {
    shim: withShim,
    aUrlAfterShim: a.transport.url.replace(/sessiontoken=[^&]+/, 'sessiontoken=<token>'),
    aCloses: a.closes,
    connectionsThroughProxy: proxy.connections,
    aHas: { s1x: findShape(a.root, s1.uuid).get('x'), s2: true, name: newName },
    bHasOfflineShapeFromA: true,
  };
}

async function atomic() {
  defineChatModels();
  const a = await connectClient('A', args.url);
  const attrs = await ensureAttributes(a);
  const b = await connectClient('B', args.url);
  const status0 = attrs.get('status');
  const name0 = a.root.get('name');

  // Test shim: mark A's next change set atomic before the session serialises it.
  a.scope.prependListener('changes', (scope, changeSet) => { changeSet.atomic = true; });
  // Observe what goes on the wire (JSON.stringify of the message) for the report.
  const wire = [];
  const origSend = a.transport._socket.send.bind(a.transport._socket);
  a.transport._socket.send = (data) => { wire.push(String(data)); return origSend(data); };

  const n = a.changeSets.length;
  const bSyncsBefore = b.received.filter((t) => t === 'ScopeSync').length;
  a.root.set('name', `atomic rename ${Date.now()}`);
  attrs.set('status', models.ChatRoomStatus.Archived);
  const cs = await nextChangeSet(a, n, 'atomic change set');
  const sentSync = wire.map((w) => JSON.parse(w)).find((m) => m.type === 'ScopeSync');
  await sleep(300);
  const bSyncs = b.received.filter((t) => t === 'ScopeSync').length - bSyncsBefore;
  const c = await connectClient('C', args.url);
  const detail = {
    sentAtomic: sentSync && sentSync.atomic,
    fragments: cs.changeSet.syncFragments.map((f) => `${f.type}:${f.clsName}:${Object.keys(f.properties).join('+')}`),
    changeSetState: lastState(cs),
    localName: a.root.get('name'), originalName: name0,
    localStatus: attrs.get('status'), originalStatus: status0,
    nameOnB: b.root.get('name'),
    scopeSyncsReceivedByB: bSyncs,
    nameOnFreshClient: c.root.get('name'),
  };
  const problems = [];
  if (detail.sentAtomic !== true) problems.push('client did not send atomic:true');
  if (detail.changeSetState !== Constants.ChangeSetState.REVERTED) problems.push(`change set ${detail.changeSetState}, expected REVERTED (every fragment rejected)`);
  if (detail.localName !== name0) problems.push('A kept the new name locally');
  if (detail.nameOnB !== name0) problems.push('B received the rename');
  if (detail.nameOnFreshClient !== name0) problems.push('server applied the rename');
  if (problems.length) {
    const e = new Error(`atomic change set was partially applied: ${problems.join('; ')}`);
    e.extra = detail;
    throw e;
  }
  return detail;
}

async function fetchDenied() {
  defineShapesModels();
  return new Promise((resolve, reject) => {
    const transport = Jetstream.transport.WebSocket({ url: args.url });
    const scope = Jetstream.scope({ name: 'Nope' });
    new models.Canvas().setScopeAndMakeRootModel(scope);
    const client = Jetstream({ transport });
    client.once('session', (session) => {
      session.fetch(scope, (err) => {
        if (err) resolve({ fetchError: err });
        else reject(new Error('fetch of an unknown scope succeeded'));
      });
    });
    client.connect();
    setTimeout(() => {
      const e = new Error('fetch callback never called');
      e.extra = { uncaught: uncaught.slice() };
      reject(e);
    }, 3000);
  });
}

async function dates() {
  defineChatModels();
  const a = await connectClient('A', args.url);
  const when = new Date('2015-01-02T03:04:05.678Z');
  const user = new models.User();
  user.set({ username: `dates-${Date.now()}`, lastActive: when });
  const wire = [];
  const origSend = a.transport._socket.send.bind(a.transport._socket);
  a.transport._socket.send = (data) => { wire.push(String(data)); return origSend(data); };
  const n = a.changeSets.length;
  a.root.get('users').push(user);
  const cs = await nextChangeSet(a, n, 'add user');
  const sent = wire.map((w) => JSON.parse(w)).find((m) => m.type === 'ScopeSync');
  const addFrag = sent && sent.fragments.find((f) => f.type === 'add');
  const c = await connectClient('C', args.url);
  const onC = c.root.get('users').filter((u) => u.uuid === user.uuid)[0];
  const read = onC && onC.get('lastActive');
  const detail = {
    changeSetState: lastState(cs),
    sentLastActive: addFrag && addFrag.properties.lastActive,
    freshClientReads: read instanceof Date ? read.toISOString() : read,
    expected: when.toISOString(),
  };
  if (!(read instanceof Date) || read.getTime() !== when.getTime()) {
    const e = new Error('Date did not survive the round trip');
    e.extra = detail;
    throw e;
  }
  return detail;
}

const run = {
  'fetch-denied': fetchDenied,
  'dates': dates,
  'two-clients': twoClients,
  'reject-revert': rejectRevert,
  'resume': () => resume(true),
  'resume-no-shim': () => resume(false),
  'atomic': atomic,
}[args.scenario];

run().then(
  (detail) => finish(uncaught.length === 0, uncaught.length ? { error: 'uncaught exception(s) in client', uncaught, ...detail, progress } : { ...detail, progress }),
  (err) => finish(false, { error: err.message, ...(err.extra || {}), uncaught: uncaught.length ? uncaught : undefined, progress }),
);
