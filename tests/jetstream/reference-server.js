#!/usr/bin/env node
// Reference Jetstream server for Tether's /jetstream conformance harness.
//
// Runs the demo of npm jetstream@0.13.4 (node_modules/jetstream/demos/app.js)
// with the demo's own model files (demos/shapes.js, demos/chat.js) and the same
// scopes (Canvas, ChatRoom) and session/fetch handlers, but:
//   * the port comes from argv/env (demo: hard-coded 3000), 0 = pick a free one;
//   * it binds 127.0.0.1 by default (--host to change);
//   * no REPL (demo: TCP 2323);
//   * the jetstream logger stays silent unless --log-level is given (the demo
//     sets "trace"; do NOT set DEBUG=jetstream*: debug@2.6.9 crashes lib/logger.js).
//   * an uncaught exception is logged to stderr and the process keeps running
//     (--crash-on-error restores Node's default). Reason: on Node 20 every
//     session expiry (10 min after a client's last message, so 10 min after
//     any client goes away) throws from lib/transport/websocket_transport.js:133
//     (websocket.once('close', undefined)) and kills the demo process.
// Nothing under node_modules is modified.
//
// Usage: node reference-server.js [--port N] [--host H] [--log-level trace]
//                                 [--session-expiry-ms MS] [--establish-timeout-ms MS]
//                                 [--deny-param NAME] [--crash-on-error]
// Env fallbacks: PORT / JETSTREAM_PORT, HOST.
// Prints "listening <port>" on stdout once the socket is bound.
'use strict';

var http = require('http');

function parseArgs(argv) {
    var out = {};
    for (var i = 0; i < argv.length; i++) {
        var a = argv[i];
        if (a.slice(0, 2) !== '--') {
            if (out.port === undefined && /^\d+$/.test(a)) { out.port = a; continue; }
            throw new Error('unexpected argument ' + a);
        }
        var eq = a.indexOf('=');
        if (a === '--crash-on-error') {
            out['crash-on-error'] = true;
        } else if (eq !== -1) {
            out[a.slice(2, eq)] = a.slice(eq + 1);
        } else {
            out[a.slice(2)] = argv[++i];
        }
    }
    return out;
}

var args = parseArgs(process.argv.slice(2));
var port = Number(args.port !== undefined ? args.port :
    (process.env.JETSTREAM_PORT || process.env.PORT || 0));
var host = args.host || process.env.HOST || '127.0.0.1';

var jetstream = require('jetstream');
var createScope = jetstream.scope;
var createServer = jetstream;
var createWebsocketTransport = jetstream.transport.WebsocketTransport.configure;
var logger = jetstream.logger;

// lib/logger.js gives winston 2 inverted levels (debug:1 ... silent:6), so its
// default console level "silent" actually prints everything. Mute the console
// transport unless --log-level is given, and then send it to stderr so stdout
// carries only the "listening <port>" line.
var consoleTransport = logger.transports.console;
if (args['log-level']) {
    logger.setLevel(args['log-level']);
    consoleTransport.stderrLevels = {debug: true, trace: true, info: true, warn: true, error: true};
} else {
    consoleTransport.silent = true;
}

// The demo's root models, exactly as demos/app.js imports them.
var ChatRoom = require('jetstream/demos/chat').ChatRoom;
var Canvas = require('jetstream/demos/shapes').Canvas;

// Same scopes and roots as demos/app.js.
var demo = {
    shapesScope: createScope({name: 'Canvas'}),
    chatScope: createScope({name: 'ChatRoom'})
};
demo.scopes = [demo.shapesScope, demo.chatScope];

demo.canvas = new Canvas();
demo.canvas.name = 'Shapes Demo';
demo.shapesScope.setRoot(demo.canvas);

demo.chatRoom = new ChatRoom();
demo.chatRoom.name = 'Chat Demo';
demo.chatScope.setRoot(demo.chatRoom);

// The demo lets the library create an express server on :3000; we hand the
// WebSocket transport our own HTTP server instead so any port (and 0) works.
var httpServer = http.createServer(function(req, res) {
    res.statusCode = 426;
    res.end('websocket only\n');
});

var listenerOptions = {server: httpServer};
if (args['establish-timeout-ms']) {
    listenerOptions.establishSessionTimeout = Number(args['establish-timeout-ms']);
}
var websocketTransport = createWebsocketTransport(listenerOptions);

var serverOptions = {transports: [websocketTransport]};
if (args['session-expiry-ms']) {
    serverOptions.sessionOptions = {
        inactivityExpiryTimeoutDuration: Number(args['session-expiry-ms'])
    };
}
var denyParam = args['deny-param'];

httpServer.listen(port, host, function() {
    var server = createServer(serverOptions);
    server.on('session', function(session, connection, params, callback) {
        // Demo: accept every session. Opt-in test hook: deny when the
        // SessionCreate params carry a truthy `<deny-param>`.
        if (denyParam && params && params[denyParam]) {
            return callback(new Error('denied by --deny-param'));
        }
        callback();

        session.on('fetch', function(name, params, callback) {
            var hasScope = false;
            demo.scopes.forEach(function(scope) {
                if (!hasScope && scope.name === name) {
                    hasScope = true;
                    callback(null, scope);
                }
            });
            if (!hasScope) {
                callback(new Error('No such scope'));
            }
        });
    });
    process.stdout.write('listening ' + httpServer.address().port + '\n');
});

if (!args['crash-on-error']) {
    process.on('uncaughtException', function(err) {
        process.stderr.write('reference-server: uncaught exception (kept running): ' +
            (err && err.stack || err) + '\n');
    });
}

function shutdown() {
    process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
