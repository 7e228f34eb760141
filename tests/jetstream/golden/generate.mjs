#!/usr/bin/env node
// Generates the raw.mjs scripts golden/*.json (the committed JSON files are what
// the runners read; edit here, run `node golden/generate.mjs`, then re-record
// with `node run-golden.mjs --record <name>` against the reference).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
const dir = path.dirname(fileURLToPath(import.meta.url));
fs.mkdirSync(dir, { recursive: true });
const SC = { index: 0, type: 'SessionCreate', params: {}, version: '0.1.0' };
const hs = (conn = 'a', tokVar = 'token') => [
  { connect: conn },
  { conn, send: SC },
  { conn, expect: { type: 'SessionCreateReply', index: 0 }, save: { [tokVar]: 'sessionToken' } },
];
const fetch = (conn, index, name, rootVar, expectReply) => [
  { conn, send: { index, type: 'ScopeFetch', name, params: {} } },
  { conn, expect: { type: 'ScopeFetchReply', replyTo: index, ...(expectReply || {}) }, ...(rootVar ? {} : {}) },
  ...(rootVar ? [{ conn, expect: { type: 'ScopeState' }, save: { [rootVar]: 'rootUUID' } }] : []),
];
const sync = (conn, index, scopeIndex, fragments, extra = {}) => ({ conn, send: { index, type: 'ScopeSync', atomic: false, scopeIndex, fragments, ...extra } });
const S1 = 'aaaaaaaa-0000-4000-8000-000000000001';
const S2 = 'aaaaaaaa-0000-4000-8000-000000000002';
const S9 = 'bbbbbbbb-0000-4000-8000-000000000009';
const U1 = 'cccccccc-0000-4000-8000-000000000001';
const U2 = 'cccccccc-0000-4000-8000-000000000002';
const AT = 'dddddddd-0000-4000-8000-000000000001';
const M1 = 'eeeeeeee-0000-4000-8000-000000000001';

const scripts = {
  'handshake': {
    description: 'SessionCreate exactly as the bundled JS client sends it (client/lib/message/session-create-message.js) -> SessionCreateReply with a token, index 0, in a JSON array frame.',
    steps: [...hs(), { quiet: 300 }],
  },
  'handshake-version': {
    description: 'semver check of SessionCreate.version: "v1.2.3-beta.1+build" is valid semver (semver 4.3.6 valid(), non-loose) and accepted; no version range is enforced.',
    steps: [
      { connect: 'a' },
      { send: { type: 'SessionCreate', index: 0, version: 'v99.2.3-beta.1+build', params: { anything: 1 } } },
      { expect: { type: 'SessionCreateReply' }, save: { token: 'sessionToken' } },
      { quiet: 200 },
    ],
  },
  'bad-version': {
    description: 'SessionCreate whose version is not valid semver ("1.0") fails to parse; the server closes with 4096 and the parse error as reason (no type field).',
    steps: [
      { connect: 'a' },
      { send: { type: 'SessionCreate', index: 0, version: '1.0', params: {} } },
      { expectClose: 'a', code: 4096 },
    ],
  },
  'bad-handshake': {
    description: 'First message is not SessionCreate: close(4096, {"message":"Unrecognized handshake, ...","type":"unrecognized-handshake"}). The reason is 130 bytes, more than a close frame may carry (123): raw.mjs reports it as sent, with invalidControlFrame; browsers/undici report 1006 and ws 1002.',
    steps: [
      { connect: 'a' },
      { send: { type: 'Ping', index: 0, ack: 0, resendMissing: false } },
      { expectClose: 'a', code: 4096 },
    ],
  },
  'not-json': {
    description: 'First frame is not JSON: the JSON parse error becomes the 4096 close reason.',
    steps: [
      { connect: 'a' },
      { send: 'hello', raw: true },
      { expectClose: 'a', code: 4096 },
    ],
  },
  'fetch': {
    description: 'ScopeFetch Canvas and ChatRoom (ScopeFetchReply + ScopeState each), an unknown scope (error reply without scopeIndex), and a second fetch of Canvas (same scopeIndex 0 again, full state again).',
    steps: [
      ...hs(),
      ...fetch('a', 1, 'Canvas', 'canvas'),
      ...fetch('a', 2, 'ChatRoom', 'room'),
      { send: { index: 3, type: 'ScopeFetch', name: 'Nope', params: {} } },
      { expect: { type: 'ScopeFetchReply', replyTo: 3 } },
      ...fetch('a', 4, 'Canvas', 'canvas2'),
      { quiet: 300 },
    ],
  },
  'sync-mixed': {
    description: 'One ScopeSync with valid and invalid fragments (seed-systems.md 1.4 trace): per-fragment replies aligned 1:1; UUIDs lower-cased; the other session (b) receives only the applied fragments; a later fetch (c) shows the new state. Then removal by orphaning (shapes:[]).',
    steps: [
      ...hs('a', 'ta'), ...fetch('a', 1, 'Canvas', 'root'),
      ...hs('b', 'tb'), ...fetch('b', 1, 'Canvas', 'rootb'),
      sync('a', 2, 0, [
        { type: 'change', uuid: '${root}', clsName: 'Canvas', properties: { shapes: [S1] } },
        { type: 'add', uuid: S1.toUpperCase(), clsName: 'Shape', properties: { x: 10, y: 20, width: 100, height: 100, color: 255 } },
        { type: 'add', uuid: S2, clsName: 'Shape', properties: { x: 'bad' } },
        { type: 'change', uuid: S9, clsName: 'Shape', properties: { x: 1 } },
      ]),
      { conn: 'a', expect: { type: 'ScopeSyncReply', replyTo: 2 } },
      { conn: 'b', expect: { type: 'ScopeSync' } },
      ...hs('c', 'tc'), ...fetch('c', 1, 'Canvas', 'rootc'),
      sync('a', 3, 0, [
        { type: 'change', uuid: '${root}', clsName: 'Canvas', properties: { shapes: [] } },
      ]),
      { conn: 'a', expect: { type: 'ScopeSyncReply', replyTo: 3 } },
      { conn: 'b', expect: { type: 'ScopeSync' } },
      { conn: 'c', expect: { type: 'ScopeSync' } },
      { quiet: 300 },
    ],
  },
  'validation-errors': {
    description: 'The server\'s per-fragment validation messages (ChatRoom models): unknown property, wrong primitive type, enum out of range, collection without array, non-UUID/non-string reference, unknown reference, unknown class, change of unknown object, add without parent; two adds of the same new UUID in one message are both accepted; an add of an existing UUID fails; a change fragment is all-or-nothing (status:1 is not applied because topic:7 fails).',
    steps: [
      ...hs(), ...fetch('a', 1, 'ChatRoom', 'room'),
      sync('a', 2, 0, [
        { type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { nope: 1 } },
        { type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { name: 5 } },
        { type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { users: 'x' } },
        { type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { attributes: 'not-a-uuid' } },
        { type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { attributes: 42 } },
        { type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { attributes: AT } },
        { type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { users: [U1, U2] } },
        { type: 'add', uuid: M1, clsName: 'NoSuchModel', properties: {} },
        { type: 'change', uuid: S9, clsName: 'User', properties: { username: 'x' } },
        { type: 'add', uuid: U1, clsName: 'User', properties: { username: 'orphan' } },
      ]),
      { expect: { type: 'ScopeSyncReply', replyTo: 2 } },
      sync('a', 3, 0, [
        { type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { attributes: AT } },
        { type: 'add', uuid: AT, clsName: 'ChatRoomAttributes', properties: { status: 5, topic: 't' } },
      ]),
      { expect: { type: 'ScopeSyncReply', replyTo: 3 } },
      sync('a', 4, 0, [
        { type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { attributes: AT } },
        { type: 'add', uuid: AT, clsName: 'ChatRoomAttributes', properties: { status: 1, topic: 't' } },
        { type: 'add', uuid: AT, clsName: 'ChatRoomAttributes', properties: { status: 0 } },
      ]),
      { expect: { type: 'ScopeSyncReply', replyTo: 4 } },
      sync('a', 5, 0, [
        { type: 'add', uuid: AT, clsName: 'ChatRoomAttributes', properties: { status: 0 } },
        { type: 'change', uuid: AT, clsName: 'ChatRoomAttributes', properties: { status: 0, topic: null, tintColor: 1.5 } },
        { type: 'change', uuid: AT, clsName: 'ChatRoomAttributes', properties: { status: 1, topic: 7 } },
      ]),
      { expect: { type: 'ScopeSyncReply', replyTo: 5 } },
      { quiet: 300 },
    ],
  },
  'chat-broadcast': {
    description: 'Two sessions on ChatRoom: a syncs a change plus an add, b receives exactly those fragments (the originator gets no echo). Then a sends a sync whose fragments all fail: a gets per-fragment errors and b still receives an EMPTY ScopeSync (fragments: []).',
    steps: [
      ...hs('a', 'ta'), ...fetch('a', 1, 'ChatRoom', 'room'),
      ...hs('b', 'tb'), ...fetch('b', 1, 'ChatRoom', 'roomb'),
      sync('a', 2, 0, [
        { type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { users: [U1] } },
        { type: 'add', uuid: U1, clsName: 'User', properties: { username: 'alice', color: 16711935 } },
      ]),
      { conn: 'a', expect: { type: 'ScopeSyncReply', replyTo: 2 } },
      { conn: 'b', expect: { type: 'ScopeSync' } },
      sync('a', 3, 0, [
        { type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { attributes: U2 } },
        { type: 'add', uuid: U2, clsName: 'ChatRoomAttributes', properties: { status: 5 } },
      ]),
      { conn: 'a', expect: { type: 'ScopeSyncReply', replyTo: 3 } },
      { conn: 'b', expect: { type: 'ScopeSync' } },
      { quiet: 300 },
    ],
  },
  'duplicate-index': {
    description: 'A client message whose index is not above the last one received is dropped silently (no reply, no broadcast); index 0 is never de-duplicated.',
    steps: [
      ...hs('a', 'ta'), ...fetch('a', 1, 'ChatRoom', 'room'),
      ...hs('b', 'tb'), ...fetch('b', 1, 'ChatRoom', 'roomb'),
      sync('a', 2, 0, [{ type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { name: 'first' } }]),
      { conn: 'a', expect: { type: 'ScopeSyncReply', replyTo: 2 } },
      { conn: 'b', expect: { type: 'ScopeSync' } },
      sync('a', 2, 0, [{ type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { name: 'duplicate' } }]),
      { quiet: 400 },
      sync('a', 1, 0, [{ type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { name: 'older' } }]),
      { quiet: 400 },
      sync('a', 3, 0, [{ type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { name: 'third' } }]),
      { conn: 'a', expect: { type: 'ScopeSyncReply', replyTo: 3 } },
      { conn: 'b', expect: { type: 'ScopeSync' } },
      { quiet: 300 },
    ],
  },
  'bad-scope-index': {
    description: 'ScopeSync to a scopeIndex the session does not hold: one scope-index-not-found error per fragment.',
    steps: [
      ...hs(), ...fetch('a', 1, 'Canvas', 'root'),
      sync('a', 2, 7, [
        { type: 'change', uuid: '${root}', clsName: 'Canvas', properties: { name: 'x' } },
        { type: 'change', uuid: '${root}', clsName: 'Canvas', properties: { name: 'y' } },
      ]),
      { expect: { type: 'ScopeSyncReply', replyTo: 2 } },
      { quiet: 300 },
    ],
  },
  'unparseable-sync': {
    description: 'A ScopeSync that fails message validation (a fragment of type "remove"; procedure without atomic; non-boolean atomic; nested object value) is dropped silently: no reply, and its index is not consumed (the same index is then accepted).',
    steps: [
      ...hs(), ...fetch('a', 1, 'Canvas', 'root'),
      sync('a', 2, 0, [{ type: 'remove', uuid: '${root}', clsName: 'Canvas', properties: {} }]),
      { quiet: 300 },
      { send: { index: 2, type: 'ScopeSync', scopeIndex: 0, procedure: 'Canvas.rename', fragments: [] } },
      { quiet: 300 },
      { send: { index: 2, type: 'ScopeSync', scopeIndex: 0, atomic: 'yes', fragments: [] } },
      { quiet: 300 },
      sync('a', 2, 0, [{ type: 'change', uuid: '${root}', clsName: 'Canvas', properties: { name: { nested: true } } }]),
      { quiet: 300 },
      sync('a', 2, 0, [{ type: 'change', uuid: '${root}', clsName: 'Canvas', properties: { name: 'accepted' } }]),
      { expect: { type: 'ScopeSyncReply', replyTo: 2 } },
      { quiet: 300 },
    ],
  },
  'atomic': {
    description: 'atomic:true is parsed and ignored by the reference: the valid fragment is applied and broadcast although another fragment fails. (A transactional server would reject all.)',
    steps: [
      ...hs('a', 'ta'), ...fetch('a', 1, 'Canvas', 'root'),
      ...hs('b', 'tb'), ...fetch('b', 1, 'Canvas', 'rootb'),
      sync('a', 2, 0, [
        { type: 'change', uuid: '${root}', clsName: 'Canvas', properties: { name: 'atomic-renamed' } },
        { type: 'change', uuid: S9, clsName: 'Shape', properties: { x: 1 } },
      ], { atomic: true }),
      { conn: 'a', expect: { type: 'ScopeSyncReply', replyTo: 2 } },
      { conn: 'b', expect: { type: 'ScopeSync' } },
      { quiet: 300 },
    ],
  },
  'procedure': {
    description: 'ScopeSync with atomic + procedure naming a procedure the demo does not define: the whole message fails before any mutation, every fragment gets could-not-apply-sync-message; nothing is broadcast.',
    steps: [
      ...hs('a', 'ta'), ...fetch('a', 1, 'Canvas', 'root'),
      ...hs('b', 'tb'), ...fetch('b', 1, 'Canvas', 'rootb'),
      sync('a', 2, 0, [
        { type: 'change', uuid: '${root}', clsName: 'Canvas', properties: { name: 'via-procedure' } },
      ], { atomic: true, procedure: 'Canvas.rename' }),
      { conn: 'a', expect: { type: 'ScopeSyncReply', replyTo: 2 } },
      sync('a', 3, 0, [
        { type: 'change', uuid: '${root}', clsName: 'Canvas', properties: { name: 'via-procedure' } },
      ], { atomic: true, procedure: 'Nope.rename' }),
      { conn: 'a', expect: { type: 'ScopeSyncReply', replyTo: 3 } },
      { quiet: 300 },
    ],
  },
  'ping': {
    description: 'Client Ping without resendMissing gets no answer; with resendMissing the server answers Ping{index:0, ack:<last client index>, resendMissing:true} followed by its un-acked messages with index > ack (none here once acked).',
    steps: [
      ...hs(), ...fetch('a', 1, 'Canvas', 'root'),
      { send: { index: 0, type: 'Ping', ack: 2, resendMissing: false } },
      { quiet: 300 },
      { send: { index: 0, type: 'Ping', ack: 2, resendMissing: true } },
      { expect: { type: 'Ping', index: 0 } },
      { quiet: 300 },
      { send: { index: 0, type: 'Ping', ack: 0, resendMissing: true } },
      { expect: { type: 'Ping', index: 0 } },
      { quiet: 300 },
    ],
  },
  'resend-unacked': {
    description: 'Without any Ping ack, a resendMissing Ping with ack:0 gets back every un-acked server message (indices 1.., never index 0 SessionCreateReply) on the same socket.',
    steps: [
      ...hs(), ...fetch('a', 1, 'Canvas', 'root'),
      { send: { index: 0, type: 'Ping', ack: 0, resendMissing: true } },
      { expect: { type: 'Ping', index: 0 } },
      { expect: { type: 'ScopeFetchReply', replyTo: 1 } },
      { expect: { type: 'ScopeState' } },
      { quiet: 300 },
    ],
  },
  'resume-token-header': {
    description: 'Session resume the iOS way: a drops its TCP connection, b changes the scope meanwhile, a reconnects with header X-Jetstream-SessionToken (no SessionCreate) and sends Ping{ack:0,resendMissing:true}: Ping{ack:<last a index>} then every un-acked message (1..3) in one frame.',
    steps: [
      ...hs('a', 'ta'), ...fetch('a', 1, 'ChatRoom', 'room'),
      ...hs('b', 'tb'), ...fetch('b', 1, 'ChatRoom', 'roomb'),
      { drop: 'a' },
      { wait: 200 },
      sync('b', 2, 0, [{ type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { name: 'changed while a was away' } }]),
      { conn: 'b', expect: { type: 'ScopeSyncReply', replyTo: 2 } },
      { wait: 200 },
      { connect: 'a2', headers: { 'X-Jetstream-SessionToken': '${ta}' } },
      { conn: 'a2', quiet: 300 },
      { conn: 'a2', send: { index: 0, type: 'Ping', ack: 0, resendMissing: true } },
      { conn: 'a2', expect: { type: 'Ping', index: 0 } },
      { conn: 'a2', expect: { type: 'ScopeSync', index: 3 } },
      { conn: 'a2', send: { index: 2, type: 'ScopeSync', atomic: false, scopeIndex: 0, fragments: [{ type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { name: 'a is back' } }] } },
      { conn: 'a2', expect: { type: 'ScopeSyncReply', replyTo: 2 } },
      { conn: 'b', expect: { type: 'ScopeSync' } },
      { quiet: 300 },
    ],
  },
  'resume-token-query': {
    description: 'Session resume through the query parameter ?x-jetstream-sessiontoken=<token> (what a browser client can do), acking what it has: Ping{ack:2,resendMissing:true} gets Ping + only the missed ScopeSync (index 3).',
    steps: [
      ...hs('a', 'ta'), ...fetch('a', 1, 'ChatRoom', 'room'),
      ...hs('b', 'tb'), ...fetch('b', 1, 'ChatRoom', 'roomb'),
      { drop: 'a' },
      { wait: 200 },
      sync('b', 2, 0, [{ type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { name: 'changed while a was away' } }]),
      { conn: 'b', expect: { type: 'ScopeSyncReply', replyTo: 2 } },
      { wait: 200 },
      { connect: 'a2', query: 'x-jetstream-sessiontoken=${ta}' },
      { conn: 'a2', send: { index: 0, type: 'Ping', ack: 2, resendMissing: true } },
      { conn: 'a2', expect: { type: 'Ping', index: 0 } },
      { conn: 'a2', expect: { type: 'ScopeSync', index: 3 } },
      { quiet: 300 },
    ],
  },
  'resume-without-token': {
    description: 'What the bundled JS client does on reconnect (it never sends the token): a new socket whose first message is Ping{resendMissing:true} is treated as a bad handshake: close 4096 unrecognized-handshake (over-long reason).',
    steps: [
      ...hs('a', 'ta'), ...fetch('a', 1, 'Canvas', 'root'),
      { drop: 'a' },
      { connect: 'a2' },
      { conn: 'a2', send: { index: 0, type: 'Ping', ack: 2, resendMissing: true } },
      { expectClose: 'a2', code: 4096 },
    ],
  },
  'unknown-token': {
    description: 'Resume with a token the server does not know: close 4096 {"message":"Session token unrecognized","type":"session-token-unrecognized"} right after the upgrade; header and query parameter alike. The query key must be lower-case after the prefix (x-jetstream-SessionToken is NOT recognised: it is treated as a new connection).',
    steps: [
      { connect: 'a', headers: { 'X-Jetstream-SessionToken': 'no-such-token' } },
      { expectClose: 'a', code: 4096 },
      { connect: 'b', query: 'x-jetstream-sessiontoken=no-such-token' },
      { expectClose: 'b', code: 4096 },
      { connect: 'c', query: 'X-JETSTREAM-sessiontoken=no-such-token' },
      { expectClose: 'c', code: 4096 },
      { connect: 'd', query: 'x-jetstream-SessionToken=no-such-token' },
      { conn: 'd', send: SC },
      { conn: 'd', expect: { type: 'SessionCreateReply' } },
      { quiet: 300 },
    ],
  },
  'dates': {
    description: 'Date properties (User.lastActive): accepted as epoch seconds or as any string new Date() parses (the JS client sends ISO strings); broadcast to others exactly as received; a full ScopeState sends every Date as epoch SECONDS (float).',
    steps: [
      ...hs('a', 'ta'), ...fetch('a', 1, 'ChatRoom', 'room'),
      ...hs('b', 'tb'), ...fetch('b', 1, 'ChatRoom', 'roomb'),
      sync('a', 2, 0, [
        { type: 'change', uuid: '${room}', clsName: 'ChatRoom', properties: { users: [U1, U2] } },
        { type: 'add', uuid: U1, clsName: 'User', properties: { username: 'secs', lastActive: 1400000000.5 } },
        { type: 'add', uuid: U2, clsName: 'User', properties: { username: 'iso', lastActive: '2015-01-02T03:04:05.678Z' } },
      ]),
      { conn: 'a', expect: { type: 'ScopeSyncReply', replyTo: 2 } },
      { conn: 'b', expect: { type: 'ScopeSync' } },
      sync('a', 3, 0, [
        { type: 'change', uuid: U1, clsName: 'User', properties: { lastActive: 'not a date' } },
      ]),
      { conn: 'a', expect: { type: 'ScopeSyncReply', replyTo: 3 } },
      ...hs('c', 'tc'), ...fetch('c', 1, 'ChatRoom', 'roomc'),
      { quiet: 300 },
    ],
  },
  'session-expiry': {
    description: 'Run with --session-expiry-ms 1000: after 1 s without client messages the server closes the socket with 4097 (empty reason) and forgets the token. On Node 20 the reference process then CRASHES (lib/transport/websocket_transport.js:133 passes undefined to websocket.once), so nothing after the 4097 can be recorded; by the code, a later resume with that token would get 4096 session-token-unrecognized.',
    serverArgs: ['--session-expiry-ms', '1000'],
    steps: [
      ...hs('a', 'ta'),
      { expectClose: 'a', code: 4097, timeout: 4000 },
    ],
  },
  'session-denied': {
    description: 'Run with --deny-param deny (opt-in hook of reference-server.js: the demo accepts every session): SessionCreate with params {deny:true} gets SessionCreateReply {index:0, error:{message:"Session creation denied"}} (no sessionToken); the socket stays open and everything sent afterwards is ignored, even a new SessionCreate.',
    serverArgs: ['--deny-param', 'deny'],
    steps: [
      { connect: 'a' },
      { send: { index: 0, type: 'SessionCreate', params: { deny: true }, version: '0.1.0' } },
      { expect: { type: 'SessionCreateReply' } },
      { quiet: 300 },
      { send: { index: 1, type: 'ScopeFetch', name: 'Canvas', params: {} } },
      { quiet: 300 },
      { send: SC },
      { quiet: 500 },
    ],
  },
  'establish-timeout': {
    description: 'Run with --establish-timeout-ms 500: a socket that sends nothing is closed with 4096 session-establish-timedout.',
    serverArgs: ['--establish-timeout-ms', '500'],
    steps: [
      { connect: 'a' },
      { expectClose: 'a', code: 4096, timeout: 3000 },
    ],
  },
};
for (const [name, s] of Object.entries(scripts)) {
  fs.writeFileSync(`${dir}/${name}.json`, JSON.stringify(s, null, 2) + '\n');
}
console.log(Object.keys(scripts).length, 'scripts');
