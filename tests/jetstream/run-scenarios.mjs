#!/usr/bin/env node
// run-scenarios.mjs: run every client scenario (client-scenarios.mjs) in its
// own process and summarise.
//
//   node run-scenarios.mjs                      start reference-server.js (port 0)
//                                               and judge against the reference's
//                                               known outcomes (expected failures
//                                               count as XFAIL, not as failures)
//   node run-scenarios.mjs --url ws://127.0.0.1:PORT/jetstream [--strict] [names...]
//                                               run against a running server (e.g.
//                                               Tether): every scenario must pass
//                                               (--reference-outcomes to judge like
//                                               the reference run instead)
// Every scenario is killed after --timeout ms (default 30000) if it has not
// ended by itself. Last line: "N passed, N failed".

import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const ALL = ['two-clients', 'reject-revert', 'resume', 'resume-no-shim', 'atomic', 'fetch-denied', 'dates'];
// What the reference server (jetstream@0.13.4 demo) does, see README.md.
const REFERENCE_FAILS = {
  'resume-no-shim': 'the unmodified client reconnects without its token; the reference closes every such socket with 4096 and the client retries at once, forever',
  'atomic': 'the reference ignores atomic: the valid fragment is applied and broadcast',
  'fetch-denied': 'the reference\'s error ScopeFetchReply has no scopeIndex; the client cannot parse it and throws',
  'dates': 'ScopeState carries epoch seconds, the client reads them as milliseconds',
};

const argv = process.argv.slice(2);
let url = null, timeout = 30000, referenceOutcomes = null;
const names = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--url') url = argv[++i];
  else if (argv[i] === '--timeout') timeout = Number(argv[++i]);
  else if (argv[i] === '--reference-outcomes') referenceOutcomes = true;
  else if (argv[i] === '--strict') referenceOutcomes = false;
  else names.push(argv[i]);
}
if (referenceOutcomes === null) referenceOutcomes = !url;

function startReference() {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, 'reference-server.js'), '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    const t = setTimeout(() => reject(new Error('reference server did not start')), 10000);
    child.stdout.on('data', (d) => {
      buf += d;
      const m = /listening (\d+)/.exec(buf);
      if (m) { clearTimeout(t); resolve({ child, port: Number(m[1]) }); }
    });
    child.on('exit', (code) => reject(new Error(`reference server exited ${code}`)));
  });
}

function runOne(name, target) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--experimental-websocket', '--no-warnings', path.join(here, 'client-scenarios.mjs'), name, '--url', target], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const killer = setTimeout(() => child.kill('SIGKILL'), timeout);
    child.on('exit', (code) => {
      clearTimeout(killer);
      const line = out.trim().split('\n').filter(Boolean).pop() || '';
      let result;
      try { result = JSON.parse(line); } catch { result = { scenario: name, ok: false, detail: { error: `no result line (exit ${code})`, stderr: err.slice(-500) } }; }
      resolve({ code, result });
    });
  });
}

const list = names.length ? names : ALL;
let server = null;
let target = url;
if (!target) {
  server = await startReference();
  target = `ws://127.0.0.1:${server.port}/jetstream`;
}
let passed = 0, failed = 0;
for (const name of list) {
  const { result } = await runOne(name, target);
  const ok = result.ok === true;
  let verdict;
  if (referenceOutcomes && REFERENCE_FAILS[name]) {
    verdict = ok ? 'XPASS' : 'XFAIL';
    ok ? failed++ : passed++;
  } else {
    verdict = ok ? 'PASS' : 'FAIL';
    ok ? passed++ : failed++;
  }
  console.log(`${verdict} ${name}${verdict === 'XFAIL' ? ` (expected with the reference: ${REFERENCE_FAILS[name]})` : ''}`);
  console.log(`  ${JSON.stringify(result)}`);
}
if (server) server.child.kill('SIGTERM');
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
