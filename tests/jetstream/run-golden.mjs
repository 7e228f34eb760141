#!/usr/bin/env node
// run-golden.mjs: run the raw-protocol scripts in golden/ and record or compare
// their output (golden/<name>.expected.jsonl).
//
//   node run-golden.mjs [--record] [names...]
//       fresh reference server (reference-server.js, port 0) per script;
//       --record writes golden/<name>.expected.jsonl, otherwise compares.
//   node run-golden.mjs --url ws://127.0.0.1:PORT/jetstream [names...]
//       run against an already running server (e.g. Tether). State is shared
//       between scripts, so prefer --server-cmd. Scripts that need server
//       options ("serverArgs") are skipped.
//   node run-golden.mjs --server-cmd 'path/to/tether --listen 127.0.0.1:{port}' [--path /jetstream] [names...]
//       start the given command per script ({port} is replaced by a free
//       port); the script runs once the port accepts TCP connections.
//       --server-arg-map FILE: JSON {"<reference serverArgs joined by space>": "<extra args for the command>"}
//       lets scripts with serverArgs run too; without an entry they are skipped.
//
//   --variant DIR: for a script that has DIR/<name>.json, run that script instead, and
//       compare against (or --record into) DIR/<name>.expected.jsonl when the script
//       or that file exists there. Tether's deliberate differences from the reference
//       live in golden/tether/, each with a "description" saying why.
//
// Comparison (default "messages"): frames are flattened into messages and
// objects compared with sorted keys, so batching of messages into frames and
// key order do not matter; close reasons are compared as parsed JSON when
// they parse. --compare frames compares the lines byte for byte.
// --show prints the actual output of every script.
// Exit 0 when all compared scripts match. Last line: "N passed, N failed".

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { runScript } from './raw.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const goldenDir = path.join(here, 'golden');

function parseArgs(argv) {
  const a = { record: false, names: [], compare: 'messages', path: '/jetstream', show: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--record') a.record = true;
    else if (k === '--url') a.url = argv[++i];
    else if (k === '--server-cmd') a.serverCmd = argv[++i];
    else if (k === '--server-arg-map') a.argMap = JSON.parse(fs.readFileSync(argv[++i], 'utf8'));
    else if (k === '--path') a.path = argv[++i];
    else if (k === '--compare') a.compare = argv[++i];
    else if (k === '--show') a.show = true;
    else if (k === '--variant') a.variant = path.resolve(argv[++i]);
    else if (k.startsWith('--')) throw new Error(`unknown option ${k}`);
    else a.names.push(k.replace(/\.json$/, '').replace(/^.*\//, ''));
  }
  return a;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}

function waitPort(port, ms) {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.on('connect', () => { s.destroy(); resolve(); });
      s.on('error', () => {
        s.destroy();
        if (Date.now() > deadline) reject(new Error(`port ${port} not accepting after ${ms} ms`));
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

async function startReference(serverArgs) {
  const child = spawn(process.execPath, [path.join(here, 'reference-server.js'), '--port', '0', ...serverArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stderrText = '';
  child.stderr.on('data', (d) => { child.stderrText += d; });
  const port = await new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error('reference server did not start')), 10000);
    child.stdout.on('data', (d) => {
      buf += d;
      const m = /listening (\d+)/.exec(buf);
      if (m) { clearTimeout(t); resolve(Number(m[1])); }
    });
    child.on('exit', (code) => reject(new Error(`reference server exited ${code}`)));
  });
  return { child, port };
}

async function startCommand(cmd, extra) {
  const port = await freePort();
  const line = cmd.replace(/\{port\}/g, String(port)) + (extra ? ' ' + extra : '');
  const child = spawn('/bin/sh', ['-c', line], { stdio: ['ignore', 'inherit', 'inherit'], detached: true });
  await waitPort(port, 30000);
  return { child, port, group: true };
}

function stop(srv) {
  if (!srv || !srv.child || srv.child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    srv.child.on('exit', () => resolve());
    try {
      if (srv.group) process.kill(-srv.child.pid, 'SIGTERM'); else srv.child.kill('SIGTERM');
    } catch { resolve(); }
    setTimeout(() => { try { srv.group ? process.kill(-srv.child.pid, 'SIGKILL') : srv.child.kill('SIGKILL'); } catch {} resolve(); }, 3000).unref();
  });
}

function canonical(v) {
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === 'object') {
    const o = {};
    for (const k of Object.keys(v).sort()) o[k] = canonical(v[k]);
    return o;
  }
  return v;
}

export function toMessages(lines) {
  const out = [];
  for (const line of lines) {
    if (!line.trim()) continue;
    const ev = JSON.parse(line);
    if (ev.ev === 'recv' && !ev.notJSON) {
      const list = Array.isArray(ev.frame) ? ev.frame : [ev.frame];
      for (const m of list) out.push(JSON.stringify(canonical({ ev: 'msg', conn: ev.conn, msg: m })));
    } else if (ev.ev === 'close') {
      let reason = ev.reason;
      try { reason = JSON.parse(ev.reason); } catch { /* keep string */ }
      out.push(JSON.stringify(canonical({ ev: 'close', conn: ev.conn, code: ev.code, reason, ...(ev.abnormal ? { abnormal: true } : {}) })));
    } else {
      out.push(JSON.stringify(canonical(ev)));
    }
  }
  return out;
}

function diff(expected, actual) {
  const n = Math.max(expected.length, actual.length);
  const out = [];
  for (let i = 0; i < n; i++) {
    if (expected[i] !== actual[i]) {
      out.push(`  line ${i + 1}:`);
      out.push(`    expected: ${expected[i] === undefined ? '<none>' : expected[i]}`);
      out.push(`    actual:   ${actual[i] === undefined ? '<none>' : actual[i]}`);
      if (out.length > 18) { out.push('  ...'); break; }
    }
  }
  return out.join('\n');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let names = fs.readdirSync(goldenDir).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();
  if (args.names.length) names = args.names;

  let passed = 0, failed = 0, skipped = 0;
  for (const name of names) {
    const variantScript = args.variant && path.join(args.variant, `${name}.json`);
    const variantExpected = args.variant && path.join(args.variant, `${name}.expected.jsonl`);
    const useVariant = Boolean(args.variant && (fs.existsSync(variantScript) || fs.existsSync(variantExpected)));
    const scriptFile = useVariant && fs.existsSync(variantScript) ? variantScript : path.join(goldenDir, `${name}.json`);
    const script = JSON.parse(fs.readFileSync(scriptFile, 'utf8'));
    const serverArgs = script.serverArgs || [];
    let srv = null;
    let url;
    try {
      if (args.url) {
        if (serverArgs.length) { skipped++; console.log(`SKIP ${name} (needs server options ${serverArgs.join(' ')})`); continue; }
        url = args.url;
      } else if (args.serverCmd) {
        let extra = '';
        if (serverArgs.length) {
          const key = serverArgs.join(' ');
          if (!args.argMap || !(key in args.argMap)) { skipped++; console.log(`SKIP ${name} (no --server-arg-map entry for "${key}")`); continue; }
          extra = args.argMap[key];
        }
        srv = await startCommand(args.serverCmd, extra);
        url = `ws://127.0.0.1:${srv.port}${args.path}`;
      } else {
        srv = await startReference(serverArgs);
        url = `ws://127.0.0.1:${srv.port}${args.path}`;
      }
      const res = await runScript(script, { url, emit: () => {} });
      if (srv && srv.child.exitCode === null) await new Promise((r) => setTimeout(r, 100));
      if (srv && srv.child.exitCode !== null) {
        const err = (srv.child.stderrText || '').split('\n').find((l) => /Error/.test(l)) || '';
        console.log(`NOTE ${name}: server exited with code ${srv.child.exitCode} during the script ${err ? `(${err.trim()})` : ''}`);
      }
      const expectedFile = useVariant ? variantExpected : path.join(goldenDir, `${name}.expected.jsonl`);
      if (args.show) console.log(res.lines.join('\n'));
      if (args.record) {
        fs.writeFileSync(expectedFile, res.lines.join('\n') + '\n');
        console.log(`${res.ok ? 'RECORDED' : 'RECORDED (script failed!)'} ${name} (${res.lines.length} lines)`);
        res.ok ? passed++ : failed++;
        continue;
      }
      if (!fs.existsSync(expectedFile)) { failed++; console.log(`FAIL ${name}: no ${path.basename(expectedFile)}`); continue; }
      const expectedLines = fs.readFileSync(expectedFile, 'utf8').split('\n').filter((l) => l.trim());
      const [e, a] = args.compare === 'frames'
        ? [expectedLines, res.lines]
        : [toMessages(expectedLines), toMessages(res.lines)];
      if (JSON.stringify(e) === JSON.stringify(a)) {
        passed++;
        console.log(`PASS ${name}${useVariant ? ' (deliberate difference: ' + path.relative(here, expectedFile) + ')' : ''}`);
      } else {
        failed++;
        console.log(`FAIL ${name}${res.ok ? '' : ' (script step failed)'}\n${diff(e, a)}`);
      }
    } catch (err) {
      failed++;
      console.log(`FAIL ${name}: ${err.message}`);
    } finally {
      await stop(srv);
    }
  }
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(1); });
