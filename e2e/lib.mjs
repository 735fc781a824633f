// Shared helpers of the real-browser tests: SMTP server, gateway process, steps and failures.

import { spawn } from 'node:child_process';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SMTPServer } from 'smtp-server';
import { simpleParser } from 'mailparser';
import { chromium } from 'playwright-core';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..');
export const OUT = path.join(HERE, 'output');
export const BIN = path.resolve(process.env.PORTCULLIS_BIN || path.join(ROOT, 'target/release/portcullis'));
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const STEP_TIMEOUT = 15_000;

/**
 * Launches Chromium the way every e2e script needs it: headless unless E2E_HEADFUL, no QUIC, no
 * background traffic, real host names mapped with `--host-resolver-rules` (the browser must not
 * see 127.0.0.1, which it treats as a secure origin), plus `extraArgs`.
 */
export async function launchChromium(resolverRules, extraArgs = []) {
  const headful = !!process.env.E2E_HEADFUL;
  const args = [
    ...(headful ? [] : ['--headless']),
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    `--host-resolver-rules=${resolverRules}`,
    ...extraArgs,
  ];
  return chromium.launch({ executablePath: CHROMIUM, headless: !headful, args, timeout: STEP_TIMEOUT });
}

const t0 = Date.now();
export const secs = () => ((Date.now() - t0) / 1000).toFixed(1).padStart(5);
export const log = (msg) => console.log(`[${secs()}s] ${msg}`);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Failure extends Error {}
export function expect(cond, msg) {
  if (!cond) throw new Failure(msg);
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Failure(`${what}: timed out after ${ms / 1000}s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------- SMTP server
export function startSmtp() {
  const messages = [];
  const server = new SMTPServer({
    secure: false,
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    size: 1024 * 1024,
    onData(stream, session, callback) {
      simpleParser(stream)
        .then((mail) => {
          messages.push({
            envelopeTo: session.envelope.rcptTo.map((r) => r.address.toLowerCase()),
            subject: mail.subject || '',
            text: mail.text || '',
            html: typeof mail.html === 'string' ? mail.html : '',
          });
          callback();
        })
        .catch(callback);
    },
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.removeListener('error', reject);
      server.on('error', (e) => log(`SMTP server error: ${e.message}`));
      resolve({ server, messages, port: server.server.address().port });
    });
  });
}

/** Waits for message number `index` (0-based) addressed to `to`. */
export async function waitForMail(smtp, to, index, timeout = STEP_TIMEOUT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const mine = smtp.messages.filter((m) => m.envelopeTo.includes(to));
    if (mine.length > index) return mine[index];
    if (Date.now() > deadline) {
      throw new Failure(`no mail #${index + 1} for ${to} arrived within ${timeout / 1000}s (SMTP server got ${smtp.messages.length} message(s) in total)`);
    }
    await sleep(100);
  }
}

export function extractLinkAndCode(mail, origin) {
  const linkRe = /https?:\/\/[^\s"'<>]+\/\.auth\/verify\?token=[^\s"'<>]+/;
  const m = mail.text.match(linkRe) || mail.html.match(linkRe);
  expect(m, `the mail has no /.auth/verify?token=... link. Text was:\n${mail.text}`);
  const link = m[0].replace(/&amp;/g, '&');
  expect(new URL(link).origin === origin, `the mailed link ${link} does not point at public_url ${origin}`);
  const c = mail.text.match(/^\s*(\d{6})\s*$/m);
  expect(c, `the mail has no 6-digit code on a line of its own. Text was:\n${mail.text}`);
  return { link, code: c[1] };
}

// ---------------------------------------------------------------- gateway process
const running = new Set();

/** Kills every gateway still running (for signal handlers). */
export function killGateways() {
  for (const child of running) child.kill('SIGKILL');
}
/**
 * Starts `portcullis serve` with the YAML `config(dir)` returns (dir: a fresh temporary folder)
 * and waits for `GET http://127.0.0.1:{healthPort}/.auth/healthz` = 200.
 */
export async function startGateway({ config, healthPort, name = 'gateway' }) {
  try {
    await access(BIN, fsc.X_OK);
  } catch {
    throw new Failure(`gateway binary ${BIN} not found or not executable: run \`cargo build --release\` or set PORTCULLIS_BIN`);
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'portcullis-e2e-'));
  const configPath = path.join(dir, 'config.yaml');
  const text = await config(dir);
  await writeFile(configPath, text);
  const output = [];
  const child = spawn(BIN, ['serve', '--config', configPath], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  const collect = (chunk) => {
    // eslint-disable-next-line no-control-regex
    for (const line of chunk.toString().replace(/\x1b\[[0-9;]*m/g, '').split('\n')) {
      if (!line) continue;
      output.push(line);
      if (output.length > 400) output.shift();
      if (process.env.E2E_VERBOSE) console.log(`  [${name}] ${line}`);
    }
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  running.add(child);
  child.on('exit', () => running.delete(child));
  const gw = { child, dir, configPath, output, get exited() { return exited; } };
  const deadline = Date.now() + STEP_TIMEOUT;
  for (;;) {
    if (exited) throw new Failure(`the gateway exited during start-up (code ${exited.code}, signal ${exited.signal}):\n${output.slice(-20).join('\n')}`);
    try {
      const r = await fetch(`http://127.0.0.1:${healthPort}/.auth/healthz`);
      if (r.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Failure(`the gateway did not answer /.auth/healthz within ${STEP_TIMEOUT / 1000}s`);
    await sleep(100);
  }
  return gw;
}

export async function stopGateway(gw) {
  if (!gw) return;
  if (!gw.exited) {
    const done = new Promise((r) => gw.child.once('exit', r));
    gw.child.kill('SIGTERM');
    const t = await Promise.race([done.then(() => 'ok'), sleep(5000).then(() => 'timeout')]);
    if (t === 'timeout' && !gw.exited) {
      gw.child.kill('SIGKILL');
      await Promise.race([done, sleep(2000)]);
    }
  }
  await rm(gw.dir, { recursive: true, force: true }).catch(() => {});
}

/** Runs the gateway binary with `args` (e.g. `sessions revoke`); resolves to {code, stdout, stderr}. */
export function runCli(args) {
  return new Promise((resolve) => {
    const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * One HTTP(S) request to 127.0.0.1:{port} for the host name in `url` (what a browser would send
 * there through `--host-resolver-rules`); self-signed certificates are accepted.
 */
export function hostRequest(port, url, { method = 'GET', headers = {}, body } = {}) {
  const u = new URL(url);
  const lib = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: u.pathname + u.search,
        servername: u.hostname,
        rejectUnauthorized: false,
        headers: { host: u.host, ...headers },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}
