#!/usr/bin/env node
// Real-browser test of "many apps, one login" on real host names, over plain http and https:
//   1. a code, a same-browser link and an other-browser confirm each land on the app host the
//      person came from (not the sign-in host);
//   2. sign-in works over plain http on a non-loopback name, while form posts from another
//      site (and from a sibling app under the shared cookie domain) are refused;
//   3. an open WebSocket through the gateway ends within seconds of logout, "Sign out
//      everywhere", `portcullis sessions revoke` and an `access` change by reload.
// Usage (from the repository root, after `cargo build --release`):
//   npm ci --prefix e2e && node e2e/apps.mjs
// Env: PORTCULLIS_BIN, CHROMIUM_BIN, E2E_VERBOSE=1, E2E_HEADFUL=1, E2E_PHASES=http,https.

import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { WebSocketServer } from 'ws';
import {
  BIN,
  Failure,
  OUT,
  STEP_TIMEOUT,
  expect,
  extractLinkAndCode,
  freePort,
  hostRequest,
  killGateways,
  launchChromium,
  log,
  runCli,
  sleep,
  startGateway,
  startSmtp,
  stopGateway,
  waitForMail,
  withTimeout,
} from './lib.mjs';

const DOMAIN = 'apps.example';
const AUTH_HOST = `auth.${DOMAIN}`;
const EVIL_SITE = 'evil.example'; // another site altogether
const EVIL_SIBLING = `evil.${DOMAIN}`; // an app under the shared cookie domain
const SCENARIO_BUDGET = 60_000;
const TOTAL_BUDGET = 280_000;
/** An open WebSocket must end within this long after its session stops being valid. */
const CLOSE_WITHIN_MS = 5_000;
/** How long a failing (old) gateway is given before the socket is declared still open. */
const CLOSE_WAIT_MS = 8_000;

const results = [];
/** Mails read so far per address (the SMTP server is shared by both phases). */
const mailCount = {};
const figures = [];
let current = '(setup)';
let activePage = null;

/** Runs one scenario; a failure is recorded (with a screenshot) and the next scenario runs. */
async function scenario(name, fn) {
  current = name;
  const started = Date.now();
  try {
    await withTimeout(Promise.resolve().then(fn), SCENARIO_BUDGET, `scenario "${name}"`);
    log(`PASS ${name} (${((Date.now() - started) / 1000).toFixed(1)}s)`);
    results.push({ name, ok: true });
  } catch (err) {
    const msg = err instanceof Failure ? err.message : err?.stack || String(err);
    log(`FAIL ${name}:\n    ${msg.split('\n').join('\n    ')}`);
    if (activePage) {
      console.log(`    browser URL: ${activePage.url()}`);
      const f = path.join(OUT, `FAIL-${slug(name)}.png`);
      await withTimeout(activePage.screenshot({ path: f, fullPage: true }), 5000, 'screenshot').catch(() => {});
      console.log(`    screenshot: ${path.relative(process.cwd(), f)}`);
    }
    results.push({ name, ok: false, msg });
  } finally {
    activePage = null;
  }
}

const slug = (s) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 70);

// ---------------------------------------------------------------- certificate
/** A self-signed certificate for the test names; returns paths and the SPKI pin Chromium trusts. */
async function makeCert(dir) {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', `/CN=${DOMAIN}`,
    '-addext', `subjectAltName=DNS:${DOMAIN},DNS:*.${DOMAIN}`,
    '-addext', 'basicConstraints=critical,CA:FALSE',
    '-keyout', key, '-out', cert,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  const x = new X509Certificate(await readFile(cert));
  const spki = x.publicKey.export({ type: 'spki', format: 'der' });
  const pin = createHash('sha256').update(spki).digest('base64');
  return { cert, key, pin };
}

// ---------------------------------------------------------------- the live app (WebSocket)
const LIVE_PAGE = `<!doctype html><meta charset=utf-8><title>Live app</title>
<body style="font-family:sans-serif;margin:2em">
<h1>Live app</h1>
<p>signed in as <b id="who">?</b></p>
<p>socket: <b id="state">connecting</b></p>
<p>server updates received: <b id="ticks">0</b> &middot; echo: <span id="echo"></span></p>
<script>
window.__live = { state: 'connecting', ticks: 0, openedAt: 0, closedAt: 0, code: null, echo: '' };
const show = (id, v) => { document.getElementById(id).textContent = v; };
const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/socket');
ws.onopen = () => { __live.state = 'open'; __live.openedAt = Date.now(); show('state', 'open'); ws.send('ping'); };
ws.onmessage = (e) => {
  const d = String(e.data);
  if (d.startsWith('hello ')) show('who', d.slice(6));
  else if (d.startsWith('tick ')) { __live.ticks += 1; show('ticks', __live.ticks); }
  else { __live.echo = d; show('echo', d); }
};
ws.onclose = (e) => { __live.closedAt = Date.now(); __live.code = e.code; __live.state = 'closed'; show('state', 'closed (code ' + e.code + ')'); };
</script>`;

/** A small WebSocket app: a page whose socket greets, echoes and pushes an update every 250 ms. */
async function startLiveApp() {
  const sockets = [];
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(LIVE_PAGE);
  });
  const wss = new WebSocketServer({ server, path: '/socket' });
  wss.on('connection', (ws, req) => {
    const rec = { email: req.headers['x-forwarded-email'] || '', openedAt: Date.now(), closedAt: 0 };
    sockets.push(rec);
    ws.send(`hello ${rec.email}`);
    let n = 0;
    const timer = setInterval(() => ws.send(`tick ${(n += 1)}`), 250);
    ws.on('message', (m) => ws.send(`echo: ${m}`));
    ws.on('close', () => {
      clearInterval(timer);
      rec.closedAt = Date.now();
    });
    ws.on('error', () => {});
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { port, sockets, close: () => new Promise((r) => { wss.close(); server.closeAllConnections?.(); server.close(r); }) };
}

// ---------------------------------------------------------------- the attacker's pages
/** Serves a page with forms that post to the sign-in host (`target()` gives its origin). */
async function startEvilSite(target) {
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    const t = target();
    const headers = { 'content-type': 'text/html; charset=utf-8' };
    if (u.searchParams.get('policy')) headers['referrer-policy'] = u.searchParams.get('policy');
    res.writeHead(200, headers);
    res.end(`<!doctype html><meta charset=utf-8><title>Prize</title><body style="font-family:sans-serif;margin:2em">
<h1>You won a prize</h1><p>served on ${req.headers.host}</p>
<form method="post" action="${t}/.auth/login"><input type="hidden" name="email" value="victim@example.com"><input type="hidden" name="rd" value="/"><button id="login">Claim (starts a sign-in)</button></form>
<form method="post" action="${t}/.auth/logout"><button id="logout">Claim (signs you out)</button></form>
<form method="post" action="${t}/.auth/sessions/revoke"><input type="hidden" name="id" value="all"><button id="revoke">Claim (signs you out everywhere)</button></form>`);
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { port, close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }) };
}

// ---------------------------------------------------------------- gateway config
function gatewayConfig({ dir, scheme, httpPort, tlsPort, cert, smtpPort, livePort, evilPort, liveAccess }) {
  const port = scheme === 'https' ? tlsPort : httpPort;
  const tls = scheme === 'https' ? `tls: { listen: "127.0.0.1:${tlsPort}", cert: "${cert.cert}", key: "${cert.key}" }\n` : '';
  return `# written by e2e/apps.mjs
listen: "127.0.0.1:${httpPort}"
${tls}public_url: "${scheme}://${AUTH_HOST}:${port}"
data_dir: "${path.join(dir, 'data')}"
upstream: "builtin:whoami"
session: { cookie_domain: "${DOMAIN}" }
access: { allowed_domains: ["example.com"] }
routes:
  - { host: "jupyter.${DOMAIN}", upstream: "builtin:whoami" }
  - { host: "grafana.${DOMAIN}", upstream: "builtin:whoami" }
  - { host: "notebook.${DOMAIN}", upstream: "builtin:whoami" }
  - host: "live.${DOMAIN}"
    upstream: "http://127.0.0.1:${livePort}"
    access: ${liveAccess}
  - { host: "${EVIL_SIBLING}", upstream: "http://127.0.0.1:${evilPort}", access: { public: true } }
login:
  methods: [link, code]
  code_length: 6
  resend_cooldown: 0s
  rate_limit: { per_ip_per_minute: 1000, per_email_per_hour: 1000, per_email_burst: 1000 }
email:
  from: "Portcullis <auth@example.com>"
  transport: smtp
  smtp: { host: 127.0.0.1, port: ${smtpPort}, security: none, timeout: 5s }
log_emails: true
`;
}

// ---------------------------------------------------------------- browser helpers
async function newContext(browser) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
  context.setDefaultTimeout(STEP_TIMEOUT);
  context.setDefaultNavigationTimeout(STEP_TIMEOUT);
  const page = await context.newPage();
  activePage = page;
  return { context, page };
}

async function bodyText(page) {
  return (await page.locator('body').innerText().catch(() => '')).replace(/\s+/g, ' ').trim().slice(0, 300);
}

async function expectAt(page, host, pathname, search) {
  await page
    .waitForURL((u) => u.hostname === host && u.pathname === pathname && (search === undefined || u.search === search), { timeout: STEP_TIMEOUT })
    .catch(async () => {
      throw new Failure(`expected to be on ${host}${pathname}${search ?? ''}, but the browser is on ${page.url()}\n  page text: ${await bodyText(page)}`);
    });
}

/**
 * Clicks `selector` and returns the answer to the POST to `postPath` it causes. A POST whose
 * answer the browser refuses to act on (a redirect blocked by the page's CSP `form-action`)
 * fails with the browser's reason.
 */
async function clickPost(page, selector, postPath) {
  const isIt = (r) => r.method() === 'POST' && new URL(r.url()).pathname === postPath;
  let onFail;
  const failed = new Promise((_, reject) => {
    onFail = (req) => {
      if (isIt(req)) {
        reject(new Failure(`clicking ${selector}: the browser gave up on POST ${postPath}: ${req.failure()?.errorText} (a redirect the page's Content-Security-Policy forbids?)`));
      }
    };
    page.on('requestfailed', onFail);
  });
  failed.catch(() => {});
  try {
    const [resp] = await Promise.all([
      Promise.race([page.waitForResponse((r) => isIt(r.request())), failed]),
      page.locator(selector).click(),
    ]);
    return resp;
  } finally {
    page.off('requestfailed', onFail);
  }
}

/** Like clickPost, but a 4xx/5xx answer fails with what the browser sent. */
async function submit(page, selector, postPath) {
  const resp = await clickPost(page, selector, postPath);
  if (resp.status() >= 400) {
    const h = await resp.request().allHeaders();
    await page.waitForLoadState('load').catch(() => {});
    throw new Failure(
      `clicking ${selector}: POST ${postPath} answered ${resp.status()}; page says "${await bodyText(page)}".\n` +
        `  The browser sent Origin: ${h.origin ?? '(none)'}, Sec-Fetch-Site: ${h['sec-fetch-site'] ?? '(none)'}, Referer: ${h.referer ?? '(none)'}`,
    );
  }
  return resp;
}

async function expectText(page, selector, wanted) {
  const loc = page.locator(selector);
  await loc.waitFor({ state: 'visible', timeout: STEP_TIMEOUT }).catch(async () => {
    throw new Failure(`element ${selector} not visible on ${page.url()}\n  page text: ${await bodyText(page)}`);
  });
  const got = (await loc.innerText()).trim();
  expect(got === wanted, `${selector} on ${page.url()} reads "${got}", expected "${wanted}"`);
}

async function shot(page, name) {
  const file = path.join(OUT, name);
  await page.screenshot({ path: file, fullPage: true });
  log(`     screenshot: ${path.relative(process.cwd(), file)}`);
}

/** Waits (bounded) for the page to leave `pathname` after a form was accepted. */
async function leaves(page, host, pathname, what) {
  await page.waitForURL((u) => !(u.hostname === host && u.pathname === pathname), { timeout: 10_000 }).catch(async () => {
    throw new Failure(`${what}: the browser stayed on ${page.url()} (a redirect it refused to follow?)\n  page text: ${await bodyText(page)}`);
  });
}

// ---------------------------------------------------------------- one phase (http or https)
async function phase(browser, smtp, scheme, cert, live, evil, evilTarget) {
  const httpPort = await freePort();
  const tlsPort = scheme === 'https' ? await freePort() : null;
  const port = scheme === 'https' ? tlsPort : httpPort;
  const origin = (host) => `${scheme}://${host}:${port}`;
  const PUBLIC = origin(AUTH_HOST);
  evilTarget.value = PUBLIC;
  const allowAll = '{ allowed_domains: ["example.com"] }';
  let gw;
  let cfgArgs;
  const nextMail = async (email) => {
    const i = mailCount[email] ?? 0;
    mailCount[email] = i + 1;
    return extractLinkAndCode(await waitForMail(smtp, email, i), PUBLIC);
  };
  const tag = (name) => `${scheme}-${name}`;
  try {
    gw = await startGateway({
      name: `gateway ${scheme}`,
      healthPort: httpPort,
      config: (dir) => {
        cfgArgs = { dir, scheme, httpPort, tlsPort, cert, smtpPort: smtp.port, livePort: live.port, evilPort: evil.port, liveAccess: allowAll };
        return gatewayConfig(cfgArgs);
      },
    });
    log(`---- ${scheme}: public_url ${PUBLIC}, apps at ${origin(`*.${DOMAIN}`)} (cookie_domain ${DOMAIN})`);

    /** Starts a sign-in from `startUrl` in `page`: login page on the sign-in host, mail requested. */
    const startSignIn = async (page, startUrl, email) => {
      await page.goto(startUrl);
      await expectAt(page, AUTH_HOST, '/.auth/login');
      const rd = new URL(page.url()).searchParams.get('rd');
      expect(rd === startUrl, `the login page's rd is ${rd}, expected ${startUrl}`);
      await page.locator('#email').fill(email);
      await submit(page, '#submit', '/.auth/login');
      await expectText(page, 'h1', 'Check your email');
    };
    const expectWhoami = async (page, host, pathname, search, email) => {
      await expectAt(page, host, pathname, search);
      await expectText(page, '#email', email);
    };

    // ---- item 1 + 2: each way of signing in lands on the app host it started from
    await scenario(`${scheme}: code typed on ${AUTH_HOST} lands on jupyter.${DOMAIN}/lab?x=1`, async () => {
      const { context, page } = await newContext(browser);
      try {
        const start = `${origin(`jupyter.${DOMAIN}`)}/lab?x=1`;
        await startSignIn(page, start, 'alice@example.com');
        const { code } = await nextMail('alice@example.com');
        await page.locator('#code').fill(code);
        await submit(page, '#submit-code', '/.auth/code');
        await leaves(page, AUTH_HOST, '/.auth/code', 'after the code');
        await expectWhoami(page, `jupyter.${DOMAIN}`, '/lab', '?x=1', 'alice@example.com');
        await shot(page, `apps-${tag('code-lands-on-jupyter')}.png`);
        // One sign-in covers the other apps under the cookie domain.
        await page.goto(`${origin(`grafana.${DOMAIN}`)}/d/2`);
        await expectWhoami(page, `grafana.${DOMAIN}`, '/d/2', undefined, 'alice@example.com');
      } finally {
        await context.close().catch(() => {});
      }
    });

    await scenario(`${scheme}: mailed link opened in the same browser lands on grafana.${DOMAIN}/d/1`, async () => {
      const { context, page } = await newContext(browser);
      try {
        const start = `${origin(`grafana.${DOMAIN}`)}/d/1`;
        await startSignIn(page, start, 'bob@example.com');
        const { link } = await nextMail('bob@example.com');
        await page.goto(link);
        if (new URL(page.url()).pathname === '/.auth/verify' && (await page.locator('#confirm').count()) > 0) {
          await submit(page, '#confirm', '/.auth/verify');
        }
        await expectWhoami(page, `grafana.${DOMAIN}`, '/d/1', '', 'bob@example.com');
        await shot(page, `apps-${tag('link-lands-on-grafana')}.png`);
      } finally {
        await context.close().catch(() => {});
      }
    });

    await scenario(`${scheme}: link confirmed in another browser lands on notebook.${DOMAIN}/tree`, async () => {
      const asker = await newContext(browser);
      try {
        await startSignIn(asker.page, `${origin(`notebook.${DOMAIN}`)}/tree`, 'carol@example.com');
      } finally {
        await asker.context.close().catch(() => {});
      }
      const { link } = await nextMail('carol@example.com');
      const { context, page } = await newContext(browser);
      try {
        await page.goto(link);
        await expectAt(page, AUTH_HOST, '/.auth/verify');
        await expectText(page, 'h1', 'Confirm sign-in');
        await submit(page, '#confirm', '/.auth/verify');
        await leaves(page, AUTH_HOST, '/.auth/verify', 'after confirming');
        await expectWhoami(page, `notebook.${DOMAIN}`, '/tree', '', 'carol@example.com');
        await shot(page, `apps-${tag('confirm-lands-on-notebook')}.png`);
        // Signing out on the app's own host (the whoami page's button) works too.
        await submit(page, '#logout', '/.auth/logout');
        await expectAt(page, `notebook.${DOMAIN}`, '/.auth/login');
        await page.goto(`${origin(`notebook.${DOMAIN}`)}/tree`);
        await expectAt(page, AUTH_HOST, '/.auth/login');
      } finally {
        await context.close().catch(() => {});
      }
    });

    // ---- item 2, the other half: posts from elsewhere are still refused
    await scenario(`${scheme}: form posts from ${EVIL_SITE} and from sibling app ${EVIL_SIBLING} are refused`, async () => {
      const token = await apiSignIn(PUBLIC, port, smtp, 'dora@example.com', nextMail);
      const { context, page } = await newContext(browser);
      try {
        await context.addCookies([sessionCookie(token, scheme)]);
        const pages = [
          `http://${EVIL_SITE}:${evil.port}/`,
          `http://${EVIL_SITE}:${evil.port}/?policy=no-referrer`,
          `${origin(EVIL_SIBLING)}/`,
          `${origin(EVIL_SIBLING)}/?policy=no-referrer`,
        ];
        const seen = [];
        for (const from of pages) {
          for (const [button, target] of [['#login', '/.auth/login'], ['#logout', '/.auth/logout'], ['#revoke', '/.auth/sessions/revoke']]) {
            await page.goto(from);
            const resp = await clickPost(page, button, target);
            const h = await resp.request().allHeaders();
            const sent = `Origin: ${h.origin ?? '-'}, Sec-Fetch-Site: ${h['sec-fetch-site'] ?? '-'}`;
            expect(resp.status() === 403, `a form on ${from} posting to ${PUBLIC}${target} was answered ${resp.status()} (sent ${sent}), expected 403`);
            await page.waitForLoadState('load').catch(() => {});
            await expectText(page, 'h1', 'Request refused');
            seen.push(`${new URL(from).host}${new URL(from).search} -> ${target}: 403 (${sent})`);
          }
        }
        for (const s of seen) log(`     ${s}`);
        await shot(page, `apps-${tag('cross-site-post-refused')}.png`);
        // The victim is still signed in, and no mail went to the victim's address.
        await page.goto(`${origin(`jupyter.${DOMAIN}`)}/still`);
        await expectWhoami(page, `jupyter.${DOMAIN}`, '/still', '', 'dora@example.com');
        expect(!smtp.messages.some((m) => m.envelopeTo.includes('victim@example.com')), 'a cross-site form started a sign-in (a mail was sent to victim@example.com)');
      } finally {
        await context.close().catch(() => {});
      }
    });

    // ---- item 3: open WebSockets end with their session
    /** Signs `email` in, opens the live app; returns the page with its socket open and ticking. */
    const openLive = async (email) => {
      const token = await apiSignIn(PUBLIC, port, smtp, email, nextMail);
      const ctx = await newContext(browser);
      await ctx.context.addCookies([sessionCookie(token, scheme)]);
      await ctx.page.goto(`${origin(`live.${DOMAIN}`)}/`);
      await ctx.page
        .waitForFunction((e) => document.getElementById('who')?.textContent === e, email, { timeout: STEP_TIMEOUT })
        .catch(async () => {
          throw new Failure(`the live app did not greet ${email}: ${await bodyText(ctx.page)}`);
        });
      await ctx.page.waitForFunction(() => window.__live.ticks >= 2 && window.__live.echo === 'echo: ping', null, { timeout: STEP_TIMEOUT });
      return { ...ctx, token };
    };
    /** Waits for the page's socket (and the app's side of it) to close; returns ms since `since` (taken just before the revoking action). */
    const closesWithin = async (live, page, email, since, what) => {
      const closed = await page
        .waitForFunction(() => window.__live.closedAt > 0, null, { timeout: CLOSE_WAIT_MS, polling: 50 })
        .then(() => true)
        .catch(() => false);
      const ticks = await page.evaluate(() => window.__live.ticks);
      if (!closed) {
        throw new Failure(`${what}: the WebSocket was still open ${CLOSE_WAIT_MS / 1000}s later (${ticks} server updates received so far)`);
      }
      const st = await page.evaluate(() => window.__live);
      const ms = st.closedAt - since;
      const app = live.sockets.filter((s) => s.email === email);
      const deadline = Date.now() + 3000;
      while (app.some((s) => !s.closedAt) && Date.now() < deadline) await sleep(50);
      expect(app.length > 0 && app.every((s) => s.closedAt), `${what}: the browser's socket closed but the app's side of it is still open`);
      const appMs = Math.max(...app.map((s) => s.closedAt)) - since;
      expect(ms <= CLOSE_WITHIN_MS, `${what}: the WebSocket closed only after ${ms} ms`);
      // No more updates arrive after the close.
      await sleep(600);
      const after = await page.evaluate(() => window.__live.ticks);
      expect(after === st.ticks, `${what}: updates kept arriving after the close (${st.ticks} -> ${after})`);
      figures.push(`${scheme}: ${what}: browser socket closed ${ms} ms after, app side ${appMs} ms after (close code ${st.code})`);
      log(`     ${what}: browser socket closed after ${ms} ms (code ${st.code}), the app's side after ${appMs} ms`);
      return ms;
    };

    await scenario(`${scheme}: "Sign out" on another app's page ends the open WebSocket`, async () => {
      const { context, page } = await openLive('erin@example.com');
      try {
        const other = await context.newPage();
        activePage = other;
        await other.goto(`${origin(`jupyter.${DOMAIN}`)}/lab`);
        await expectText(other, '#email', 'erin@example.com');
        const since = Date.now();
        await submit(other, '#logout', '/.auth/logout');
        activePage = page;
        await closesWithin(live, page, 'erin@example.com', since, 'logout');
        await shot(page, `apps-${tag('websocket-closed-after-logout')}.png`);
      } finally {
        await context.close().catch(() => {});
      }
    });

    await scenario(`${scheme}: "Sign out everywhere" (/.auth/sessions) ends the open WebSocket`, async () => {
      const { context, page } = await openLive('frank@example.com');
      try {
        const other = await context.newPage();
        activePage = other;
        await other.goto(`${PUBLIC}/.auth/sessions`);
        await expectText(other, '#email', 'frank@example.com');
        const since = Date.now();
        await submit(other, '#revoke-all', '/.auth/sessions/revoke');
        activePage = page;
        await closesWithin(live, page, 'frank@example.com', since, 'sign out everywhere');
        await shot(page, `apps-${tag('websocket-closed-after-sign-out-everywhere')}.png`);
      } finally {
        await context.close().catch(() => {});
      }
    });

    await scenario(`${scheme}: \`portcullis sessions revoke\` ends the open WebSocket`, async () => {
      const { context, page } = await openLive('gina@example.com');
      try {
        const since = Date.now();
        const out = await runCli(['sessions', 'revoke', '--config', gw.configPath, '--email', 'gina@example.com']);
        expect(out.code === 0, `sessions revoke exited ${out.code}: ${out.stderr}`);
        await closesWithin(live, page, 'gina@example.com', since, 'sessions revoke (CLI)');
        await shot(page, `apps-${tag('websocket-closed-after-cli-revoke')}.png`);
      } finally {
        await context.close().catch(() => {});
      }
    });

    await scenario(`${scheme}: an \`access\` change by reload ends the open WebSocket of a user it no longer allows`, async () => {
      const { context, page } = await openLive('hugo@example.com');
      const kept = await openLive('ines@example.com');
      try {
        await writeFile(gw.configPath, gatewayConfig({ ...cfgArgs, liveAccess: '{ allowed_emails: ["ines@example.com"] }' }));
        const since = Date.now();
        gw.child.kill('SIGHUP');
        activePage = page;
        await closesWithin(live, page, 'hugo@example.com', since, 'access reload (SIGHUP)');
        await shot(page, `apps-${tag('websocket-closed-after-access-reload')}.png`);
        const stillOpen = await kept.page.evaluate(() => window.__live.closedAt === 0);
        expect(stillOpen, 'the socket of a user the new access list still allows was closed too');
      } finally {
        await context.close().catch(() => {});
        await kept.context.close().catch(() => {});
      }
    });
  } catch (err) {
    results.push({ name: `${scheme}: (phase setup)`, ok: false, msg: err?.message || String(err) });
    log(`FAIL ${scheme} phase: ${err?.message || err}`);
  } finally {
    const failed = results.some((r) => !r.ok && r.name.startsWith(`${scheme}:`));
    if (gw && (failed || process.env.E2E_VERBOSE)) {
      console.log(`  last ${scheme} gateway log lines:\n${gw.output.slice(-25).map((l) => `    ${l}`).join('\n')}`);
    }
    await stopGateway(gw);
  }
}

/** The session cookie as the gateway sets it (Domain = cookie_domain). */
function sessionCookie(token, scheme) {
  return { name: 'portcullis_session', value: token, domain: `.${DOMAIN}`, path: '/', httpOnly: true, secure: scheme === 'https', sameSite: 'Lax' };
}

/** Signs `email` in through the JSON API (what a CLI would do) and returns the session token. */
async function apiSignIn(publicUrl, port, smtp, email, nextMail) {
  const json = { 'content-type': 'application/json' };
  const r1 = await hostRequest(port, `${publicUrl}/.auth/api/login`, { method: 'POST', headers: json, body: JSON.stringify({ email }) });
  expect(r1.status === 200, `api/login for ${email} answered ${r1.status}: ${r1.body}`);
  const { challenge_id } = JSON.parse(r1.body);
  const { code } = await nextMail(email);
  const r2 = await hostRequest(port, `${publicUrl}/.auth/api/verify`, {
    method: 'POST',
    headers: json,
    body: JSON.stringify({ challenge_id, code, issue_token: true }),
  });
  expect(r2.status === 200, `api/verify for ${email} answered ${r2.status}: ${r2.body}`);
  return JSON.parse(r2.body).session_token;
}

// ---------------------------------------------------------------- main
async function main() {
  await mkdir(OUT, { recursive: true });
  const phases = (process.env.E2E_PHASES || 'http,https').split(',').map((s) => s.trim()).filter(Boolean);
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'portcullis-apps-'));
  let smtp;
  let live;
  let evil;
  let browser;
  const evilTarget = { value: '' };
  const overall = setTimeout(() => {
    console.error(`\nFAIL: the run exceeded ${TOTAL_BUDGET / 1000}s (in ${current})`);
    killGateways();
    process.exit(3);
  }, TOTAL_BUDGET);
  overall.unref();
  try {
    const cert = await makeCert(tmp);
    smtp = await startSmtp();
    live = await startLiveApp();
    evil = await startEvilSite(() => evilTarget.value);
    const rules = `MAP *.${DOMAIN} 127.0.0.1, MAP ${DOMAIN} 127.0.0.1, MAP ${EVIL_SITE} 127.0.0.1`;
    // Trust exactly the test certificate (not every certificate).
    browser = await launchChromium(rules, [`--ignore-certificate-errors-spki-list=${cert.pin}`]);
    log(`Chromium ${browser.version()}, ${BIN}`);
    log(`     --host-resolver-rules="${rules}"; live app on 127.0.0.1:${live.port}, ${EVIL_SITE} on 127.0.0.1:${evil.port}`);
    for (const scheme of phases) {
      await phase(browser, smtp, scheme, cert, live, evil, evilTarget);
    }
  } catch (err) {
    results.push({ name: '(setup)', ok: false, msg: err?.stack || String(err) });
    console.error(`setup failed: ${err?.stack || err}`);
  } finally {
    if (browser) await withTimeout(browser.close(), 10_000, 'closing the browser').catch(() => {});
    if (smtp) await new Promise((r) => smtp.server.close(r));
    if (live) await live.close().catch(() => {});
    if (evil) await evil.close().catch(() => {});
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
  }
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log('\nsummary:');
  for (const r of results) console.log(`  ${r.ok ? 'PASS' : 'FAIL'}  ${r.name}`);
  if (figures.length) {
    console.log('\nWebSocket close times (from the revoking click / command / signal):');
    for (const f of figures) console.log(`  ${f}`);
  }
  console.log(`screenshots: ${OUT}`);
  console.log(`\n${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.error(`\ninterrupted (${sig}) in ${current}`);
    killGateways();
    process.exit(130);
  });
}

const code = await main();
process.exit(code);
