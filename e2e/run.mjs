#!/usr/bin/env node
// Real-browser end-to-end test of Portcullis: SMTP server + gateway + headless Chromium.
// Usage (from the repository root, after `cargo build --release`):
//   npm ci --prefix e2e && node e2e/run.mjs
// Env: PORTCULLIS_BIN (default target/release/portcullis), CHROMIUM_BIN (default /usr/bin/chromium),
//      E2E_HEADFUL=1 to watch the browser, E2E_VERBOSE=1 to echo the gateway's log live.

import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile, access } from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SMTPServer } from 'smtp-server';
import { simpleParser } from 'mailparser';
import { launchChromium } from './lib.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const OUT = path.join(HERE, 'output');
const BIN = path.resolve(process.env.PORTCULLIS_BIN || path.join(ROOT, 'target/release/portcullis'));
const EMAIL = 'alice@example.com';
// The page origin is a host name, never 127.0.0.1: browsers treat loopback as a secure origin
// (Sec-Fetch-Site is sent, http is "secure"), which hides what plain http on a network does.
const HOST = 'portal.example';
const STEP_TIMEOUT = 15_000; // every browser action / wait
const STEP_BUDGET = 30_000; // a whole numbered step
const TOTAL_BUDGET = 150_000; // the whole run, well under 3 minutes

const t0 = Date.now();
const secs = () => ((Date.now() - t0) / 1000).toFixed(1).padStart(5);
const log = (msg) => console.log(`[${secs()}s] ${msg}`);

class Failure extends Error {}
function expect(cond, msg) {
  if (!cond) throw new Failure(msg);
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Failure(`${what}: timed out after ${ms / 1000}s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

let stepNo = 0;
let currentStep = '(setup)';
async function step(name, fn) {
  stepNo += 1;
  currentStep = `${stepNo}. ${name}`;
  const started = Date.now();
  const result = await withTimeout(Promise.resolve().then(fn), STEP_BUDGET, `step "${currentStep}"`);
  log(`PASS ${currentStep} (${((Date.now() - started) / 1000).toFixed(1)}s)`);
  return result;
}

function freePort() {
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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- SMTP server
function startSmtp() {
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
            from: mail.from?.text || '',
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
async function waitForMail(smtp, to, index, timeout = STEP_TIMEOUT) {
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

function extractLinkAndCode(mail, origin) {
  const linkRe = /https?:\/\/[^\s"'<>]+\/\.auth\/verify\?token=[^\s"'<>]+/;
  const m = mail.text.match(linkRe) || mail.html.match(linkRe);
  expect(m, `the mail has no /.auth/verify?token=... link. Text was:\n${mail.text}`);
  const link = m[0].replace(/&amp;/g, '&');
  expect(new URL(link).origin === origin, `the mailed link ${link} does not point at public_url ${origin}`);
  const c = mail.text.match(/^\s*(\d{6})\s*$/m);
  expect(c, `the mail has no 6-digit code on a line of its own. Text was:\n${mail.text}`);
  return { link, code: c[1] };
}

// ---------------------------------------------------------------- gateway
async function startGateway(smtpPort) {
  try {
    await access(BIN, fsc.X_OK);
  } catch {
    throw new Failure(`gateway binary ${BIN} not found or not executable: run \`cargo build --release\` or set PORTCULLIS_BIN`);
  }
  const port = await freePort();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'portcullis-e2e-'));
  const publicUrl = `http://${HOST}:${port}`;
  const configPath = path.join(dir, 'config.yaml');
  await writeFile(
    configPath,
    `# written by e2e/run.mjs
listen: "127.0.0.1:${port}"
public_url: "${publicUrl}"
data_dir: "${path.join(dir, 'data')}"
upstream: "builtin:whoami"
access:
  allowed_domains: ["example.com"]
login:
  methods: [link, code]
  code_length: 6
  resend_cooldown: 0s
email:
  from: "Portcullis <auth@example.com>"
  transport: smtp
  smtp:
    host: 127.0.0.1
    port: ${smtpPort}
    security: none
    timeout: 5s
log_emails: true
`,
  );
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
      if (process.env.E2E_VERBOSE) console.log(`  [gateway] ${line}`);
    }
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  const gw = { child, port, publicUrl, dir, configPath, output, get exited() { return exited; } };

  const deadline = Date.now() + STEP_TIMEOUT;
  for (;;) {
    if (exited) throw new Failure(`the gateway exited during start-up (code ${exited.code}, signal ${exited.signal})`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/.auth/healthz`);
      if (r.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Failure(`GET http://127.0.0.1:${port}/.auth/healthz did not answer 200 within ${STEP_TIMEOUT / 1000}s`);
    await sleep(100);
  }
  return gw;
}

async function stopGateway(gw) {
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

// ---------------------------------------------------------------- browser helpers
async function newPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
  context.setDefaultTimeout(STEP_TIMEOUT);
  context.setDefaultNavigationTimeout(STEP_TIMEOUT);
  const page = await context.newPage();
  return { context, page };
}

function here(page) {
  const u = new URL(page.url());
  return { path: u.pathname, search: u.search, url: u };
}

async function expectPath(page, pathname, search) {
  await page.waitForURL((u) => u.pathname === pathname && (search === undefined || u.search === search), {
    timeout: STEP_TIMEOUT,
  }).catch(async () => {
    const body = (await page.locator('body').innerText().catch(() => '')).slice(0, 400);
    throw new Failure(`expected to be on ${pathname}${search ?? ''}, but the browser is on ${page.url()}\npage text: ${body}`);
  });
}

async function expectText(page, selector, wanted) {
  const loc = page.locator(selector);
  await loc.waitFor({ state: 'visible', timeout: STEP_TIMEOUT }).catch(async () => {
    const body = (await page.locator('body').innerText().catch(() => '')).slice(0, 400);
    throw new Failure(`element ${selector} not visible on ${page.url()}\npage text: ${body}`);
  });
  const got = (await loc.innerText()).trim();
  expect(got === wanted, `${selector} on ${page.url()} reads "${got}", expected "${wanted}"`);
}

async function shot(page, name) {
  const file = path.join(OUT, name);
  await page.screenshot({ path: file, fullPage: true });
  log(`     screenshot: ${path.relative(process.cwd(), file) || file}`);
  return file;
}

/**
 * Clicks a form's submit button and checks the gateway accepted the POST to `postPath`
 * (a 4xx/5xx answer fails with its status, page text and the Origin/Sec-Fetch-Site sent).
 */
async function submit(page, selector, postPath) {
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === postPath),
    page.locator(selector).click(),
  ]);
  if (resp.status() >= 400) {
    const h = await resp.request().allHeaders();
    await page.waitForLoadState('load').catch(() => {});
    const text = (await page.locator('body').innerText().catch(() => '')).replace(/\s+/g, ' ').trim().slice(0, 300);
    throw new Failure(
      `clicking ${selector}: POST ${postPath} answered ${resp.status()}; page says "${text}".\n` +
        `  The browser sent Origin: ${h.origin ?? '(none)'}, Sec-Fetch-Site: ${h['sec-fetch-site'] ?? '(none)'}` +
        (resp.status() === 403 && h.origin === 'null'
          ? '\n  => the same-origin check refused `Origin: null` (sent by browsers under a no-referrer policy)'
          : ''),
    );
  }
  return resp;
}

/** On the login page: type the address, submit, and check the "Check your email" page. */
async function requestMail(page, email) {
  await page.locator('#email').fill(email);
  await submit(page, '#submit', '/.auth/login');
  await page.waitForLoadState('load');
  await expectText(page, 'h1', 'Check your email');
  await expectText(page, '#sent-to', email);
}

/** Asserts the whoami page for `email` at /dashboard?x=1. */
async function expectSignedIn(page, email) {
  await expectPath(page, '/dashboard', '?x=1');
  await expectText(page, '#email', email);
  const body = await page.locator('table').innerText();
  expect(body.toLowerCase().includes('x-forwarded-email'), `the whoami page lists no X-Forwarded-Email header:\n${body}`);
}

async function signOut(page) {
  await Promise.all([page.waitForURL((u) => u.pathname === '/.auth/login'), submit(page, '#logout', '/.auth/logout')]);
  await expectPath(page, '/.auth/login');
  await page.locator('#email').waitFor({ state: 'visible' });
}

/** WCAG 2.1 contrast ratio of two computed CSS colours (`rgb(r, g, b)`; alpha ignored). */
function contrast(a, b) {
  const lum = (c) => {
    const [r, g, bl] = c.match(/[\d.]+/g).slice(0, 3).map((v) => {
      const x = Number(v) / 255;
      return x <= 0.04045 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * bl;
  };
  const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

/** Fails when the page scrolls sideways or a table cell's short value wraps (like "127./0.0./1"). */
async function expectPhoneLayout(page, what) {
  const r = await page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const wrapped = [];
    for (const el of document.querySelectorAll('table.stack td code, table.stack th')) {
      const text = el.textContent.trim();
      const line = parseFloat(getComputedStyle(el).lineHeight) || 20;
      // Values that fit on one line of a phone must stay on one line.
      if (text.length <= 24 && el.getBoundingClientRect().height > line * 1.5 && el.offsetParent) wrapped.push(text);
    }
    const cells = [...document.querySelectorAll('table.stack td')].filter((td) => td.offsetParent);
    const narrow = cells.filter((td) => td.getBoundingClientRect().width < width * 0.6).map((td) => td.textContent.trim().slice(0, 30));
    return { width, scroll: document.documentElement.scrollWidth, wrapped, narrow, stacked: cells.length > 0 && cells.every((td) => getComputedStyle(td).display === 'block') };
  });
  expect(r.scroll <= r.width, `${what}: the page is ${r.scroll}px wide on a ${r.width}px screen (sideways scrolling)`);
  expect(r.stacked, `${what}: the table does not stack on a ${r.width}px screen`);
  expect(r.wrapped.length === 0, `${what}: short values wrap: ${JSON.stringify(r.wrapped)}`);
  expect(r.narrow.length === 0, `${what}: cells squeezed below 60% of the screen: ${JSON.stringify(r.narrow)}`);
}

/** Every button's text against its own (or, when transparent, the card's) background: at least 4.5:1. */
async function expectButtonContrast(page, what) {
  const buttons = await page.evaluate(() => {
    const card = getComputedStyle(document.querySelector('main')).backgroundColor;
    return [...document.querySelectorAll('button')].map((b) => {
      const s = getComputedStyle(b);
      const transparent = s.backgroundColor === 'rgba(0, 0, 0, 0)' || s.backgroundColor === 'transparent';
      return { id: b.id || b.textContent.trim(), fg: s.color, bg: transparent ? card : s.backgroundColor };
    });
  });
  expect(buttons.length > 0, `${what}: no buttons`);
  for (const b of buttons) {
    const ratio = contrast(b.fg, b.bg);
    expect(ratio >= 4.5, `${what}: button "${b.id}" text ${b.fg} on ${b.bg} is ${ratio.toFixed(2)}:1, WCAG AA needs 4.5:1`);
  }
}

// ---------------------------------------------------------------- the test
let gw; // module-level so SIGINT/SIGTERM can stop it
async function main() {
  await mkdir(OUT, { recursive: true });
  let smtp;
  let browser;
  let activePage = null;
  const overall = setTimeout(() => {
    console.error(`\nFAIL: the run exceeded ${TOTAL_BUDGET / 1000}s (in step ${currentStep})`);
    if (gw && !gw.exited) gw.child.kill('SIGKILL');
    process.exit(3);
  }, TOTAL_BUDGET + 15_000);
  overall.unref();

  try {
    await withTimeout(
      (async () => {
        smtp = await step('SMTP server listening', async () => {
          const s = await startSmtp();
          log(`     smtp://127.0.0.1:${s.port}`);
          return s;
        });

        gw = await step('gateway started and /.auth/healthz == 200', async () => {
          const g = await startGateway(smtp.port);
          log(`     ${BIN} serve --config ${g.configPath} -> ${g.publicUrl}`);
          return g;
        });
        const base = gw.publicUrl;
        const protectedUrl = `${base}/dashboard?x=1`;

        browser = await step('headless Chromium launched', async () => {
          const b = await launchChromium(`MAP ${HOST} 127.0.0.1`);
          log(`     Chromium ${b.version()}`);
          return b;
        });

        const { page } = await newPage(browser);
        activePage = page;
        // An invalid `pattern` attribute is reported only here (and then checks nothing).
        const consoleErrors = [];
        page.on('console', (m) => {
          if (m.type() === 'error') consoleErrors.push(m.text());
        });

        // ---- 1st sign-in: magic link in the same browser
        await step('protected URL redirects to the login page', async () => {
          const resp = await page.goto(protectedUrl);
          expect(resp, 'no response for the protected URL');
          await expectPath(page, '/.auth/login');
          const rd = here(page).url.searchParams.get('rd');
          expect(rd === protectedUrl, `login page rd parameter is ${JSON.stringify(rd)}, expected ${protectedUrl}`);
          await expectText(page, 'h1', 'Sign in');
          await page.locator('#email').waitFor({ state: 'visible' });
          await shot(page, 'login.png');
        });

        let mail1;
        await step(`request a sign-in mail for ${EMAIL} -> "Check your email" page`, async () => {
          await requestMail(page, EMAIL);
          await shot(page, 'check-email.png');
        });

        let first;
        await step('mail #1 arrives over SMTP with a link and a 6-digit code', async () => {
          mail1 = await waitForMail(smtp, EMAIL, 0);
          first = extractLinkAndCode(mail1, base);
          log(`     subject "${mail1.subject}", link ${first.link.replace(/token=.*/, 'token=…')}, code ${first.code}`);
        });

        let linkOutcome;
        await step('opening the link in the same browser signs in and lands on /dashboard?x=1', async () => {
          await page.goto(first.link);
          if (here(page).path === '/.auth/verify' && (await page.locator('#confirm').count()) > 0) {
            linkOutcome = 'confirm page shown, clicked #confirm';
            await Promise.all([page.waitForURL((u) => u.pathname !== '/.auth/verify'), submit(page, '#confirm', '/.auth/verify')]);
          } else {
            linkOutcome = 'signed in at once (binding cookie)';
          }
          log(`     ${linkOutcome}`);
          await expectSignedIn(page, EMAIL);
          await shot(page, 'whoami.png');
        });

        await step('the used link no longer works', async () => {
          // In the browser (its resolver knows the host name), in a second tab.
          const again = await page.context().newPage();
          try {
            const r = await again.goto(first.link);
            expect(r && r.status() >= 400, `re-opening the used link answered ${r?.status()}, expected an error`);
          } finally {
            await again.close();
          }
        });

        // ---- 2nd sign-in: one-time code
        await step('sign out (#logout) lands on /.auth/login', async () => {
          await signOut(page);
        });

        await step('after sign-out the protected URL asks for sign-in again', async () => {
          await page.goto(protectedUrl);
          await expectPath(page, '/.auth/login');
        });

        await step('request mail #2 from the login page', async () => {
          await requestMail(page, EMAIL);
        });

        await step('the code field refuses letters and wrong lengths in the browser (valid pattern, no console error)', async () => {
          const verdicts = await page.locator('#code').evaluate((el) => {
            const out = {};
            for (const v of ['123456', '123 456', '123-456', '12345', '1234567', 'abcdef', '12a456']) {
              el.value = v;
              out[v] = el.checkValidity();
            }
            el.value = '';
            return out;
          });
          const wanted = { '123456': true, '123 456': true, '123-456': true, '12345': false, '1234567': false, abcdef: false, '12a456': false };
          expect(JSON.stringify(verdicts) === JSON.stringify(wanted), `#code validity ${JSON.stringify(verdicts)}, expected ${JSON.stringify(wanted)}`);
          const bad = consoleErrors.filter((e) => /pattern|regular expression/i.test(e));
          expect(bad.length === 0, `the browser console reports: ${bad.join(' | ')}`);
          for (const attr of ['inputmode', 'autocomplete']) {
            const v = await page.locator('#code').getAttribute(attr);
            expect(v === { inputmode: 'numeric', autocomplete: 'one-time-code' }[attr], `#code ${attr}="${v}"`);
          }
        });

        let second;
        await step('mail #2 arrives; type the code into #code and click #submit-code', async () => {
          const mail2 = await waitForMail(smtp, EMAIL, 1);
          second = extractLinkAndCode(mail2, base);
          expect(second.link !== first.link, 'mail #2 carries the same link as mail #1');
          log(`     code ${second.code}`);
          await page.locator('#code').fill(second.code);
          await Promise.all([page.waitForURL((u) => u.pathname === '/dashboard'), submit(page, '#submit-code', '/.auth/code')]);
          await expectSignedIn(page, EMAIL);
        });

        // ---- a phone (390 px), light and dark
        await step('390 px wide, dark: whoami and sessions tables stack, buttons readable, "Sign out everywhere" is not the primary action', async () => {
          await page.setViewportSize({ width: 390, height: 844 });
          try {
            for (const scheme of ['light', 'dark']) {
              await page.emulateMedia({ colorScheme: scheme });
              await page.goto(protectedUrl);
              await expectSignedIn(page, EMAIL);
              await expectPhoneLayout(page, `whoami, ${scheme}`);
              await expectButtonContrast(page, `whoami, ${scheme}`);
              await shot(page, `mobile-${scheme}-whoami.png`);
              await page.goto(`${base}/.auth/sessions`);
              await expectText(page, 'h1', 'Your sessions');
              await expectPhoneLayout(page, `sessions, ${scheme}`);
              await expectButtonContrast(page, `sessions, ${scheme}`);
              const fill = await page.locator('#revoke-all').evaluate((b) => getComputedStyle(b).backgroundColor);
              expect(fill === 'rgba(0, 0, 0, 0)', `"Sign out everywhere" has a filled background ${fill}: styled as the primary action`);
              await shot(page, `mobile-${scheme}-sessions.png`);
            }
            await page.goto(`${base}/.auth/login`);
            await expectButtonContrast(page, 'login, dark');
          } finally {
            await page.emulateMedia({ colorScheme: null });
            await page.setViewportSize({ width: 1000, height: 760 });
          }
          await page.goto(protectedUrl);
          await expectSignedIn(page, EMAIL);
        });

        // ---- logged out => protected again
        await step('sign out again; GET /dashboard redirects to the login page', async () => {
          await signOut(page);
          const resp = await page.goto(`${base}/dashboard`);
          const hop = resp?.request().redirectedFrom();
          expect(hop, `GET /dashboard was not redirected (final URL ${page.url()})`);
          const status = (await hop.response())?.status();
          expect(status === 302 || status === 303 || status === 307, `GET /dashboard answered ${status}, expected a redirect`);
          await expectPath(page, '/.auth/login');
          const rd = here(page).url.searchParams.get('rd');
          expect(rd === `${base}/dashboard`, `rd is ${JSON.stringify(rd)}, expected ${base}/dashboard`);
          const cookies = await page.context().cookies(base);
          expect(!cookies.some((c) => c.name === 'portcullis_session' && c.value), 'the session cookie is still set after sign-out');
        });

        // ---- 3rd sign-in: link opened in a fresh browser context (no binding cookie)
        await step('request mail #3 (started on /dashboard?x=1)', async () => {
          await page.goto(protectedUrl);
          await expectPath(page, '/.auth/login');
          await requestMail(page, EMAIL);
        });

        const fresh = await newPage(browser);
        try {
          activePage = fresh.page;
          await step('link #3 in a fresh browser context shows the confirm page; #confirm signs in', async () => {
            const mail3 = await waitForMail(smtp, EMAIL, 2);
            const third = extractLinkAndCode(mail3, base);
            await fresh.page.goto(third.link);
            await expectPath(fresh.page, '/.auth/verify');
            await expectText(fresh.page, 'h1', 'Confirm sign-in');
            const shown = await fresh.page.locator('main').innerText();
            expect(shown.includes(EMAIL), `the confirm page does not name ${EMAIL}:\n${shown}`);
            await shot(fresh.page, 'confirm.png');
            await Promise.all([
              fresh.page.waitForURL((u) => u.pathname === '/dashboard'),
              submit(fresh.page, '#confirm', '/.auth/verify'),
            ]);
            await expectSignedIn(fresh.page, EMAIL);
          });
          await step('the first browser context is still signed out', async () => {
            activePage = page;
            await page.goto(`${base}/dashboard`);
            await expectPath(page, '/.auth/login');
          });
        } finally {
          await fresh.context.close().catch(() => {});
        }
        activePage = null;
        log(`link sign-in in the requesting browser: ${linkOutcome}`);
      })(),
      TOTAL_BUDGET,
      'the whole run',
    );
    console.log(`\nOK: all ${stepNo} steps passed in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    console.log(`screenshots: ${['login.png', 'check-email.png', 'whoami.png', 'confirm.png', 'mobile-light-whoami.png', 'mobile-dark-whoami.png', 'mobile-light-sessions.png', 'mobile-dark-sessions.png'].map((f) => path.join(OUT, f)).join(', ')}`);
    return 0;
  } catch (err) {
    console.error(`\nFAIL in step ${currentStep}:\n  ${err instanceof Failure ? err.message : err?.stack || err}`);
    if (activePage) {
      try {
        console.error(`  browser URL: ${activePage.url()}`);
        const f = path.join(OUT, 'failure.png');
        await withTimeout(activePage.screenshot({ path: f, fullPage: true }), 5000, 'failure screenshot');
        console.error(`  failure screenshot: ${f}`);
      } catch {
        /* best effort */
      }
    }
    if (gw) {
      if (gw.exited) console.error(`  gateway exited: code ${gw.exited.code}, signal ${gw.exited.signal}`);
      console.error(`  last gateway log lines:\n${gw.output.slice(-30).map((l) => `    ${l}`).join('\n') || '    (none)'}`);
    }
    if (smtp) console.error(`  SMTP server received ${smtp.messages.length} message(s)`);
    return 1;
  } finally {
    if (browser) await withTimeout(browser.close(), 10_000, 'closing the browser').catch((e) => console.error(`  ${e.message}`));
    await stopGateway(gw).catch((e) => console.error(`  stopping the gateway: ${e.message}`));
    if (smtp) await new Promise((r) => smtp.server.close(r));
  }
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.error(`\ninterrupted (${sig}) in step ${currentStep}`);
    if (gw && !gw.exited) gw.child.kill('SIGKILL');
    process.exit(130);
  });
}

const code = await main();
log(`done (exit ${code})`);
process.exit(code);
