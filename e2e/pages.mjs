#!/usr/bin/env node
// Real-browser test of the sign-in pages' behaviour (issue 11): refresh-safety, lockout and
// resend (with its countdown), the signed-out notice and branding; every page state is saved as
// a screenshot on a desktop, on a 390 px phone and in dark mode (e2e/output/pages-*.png).
// Usage (from the repository root, after `cargo build --release`):
//   npm ci --prefix e2e && node e2e/pages.mjs
// Env: PORTCULLIS_BIN, CHROMIUM_BIN, E2E_HEADFUL=1, E2E_VERBOSE=1 (as run.mjs).

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import {
  BIN,
  OUT,
  STEP_TIMEOUT,
  Failure,
  expect,
  extractLinkAndCode,
  freePort,
  killGateways,
  launchChromium,
  log,
  sleep,
  startGateway,
  startSmtp,
  stopGateway,
  waitForMail,
  withTimeout,
} from './lib.mjs';

const HOST = 'portal.example'; // default branding
const BRAND_HOST = 'acme.example'; // branding: Acme Tools
const MAX_ATTEMPTS = 3; // login.max_code_attempts of both gateways
const COOLDOWN = 4; // login.resend_cooldown of both gateways, seconds
const HINT = 'Use your @example.com address';
const ACCENT = '#1d4ed8';
const STEP_BUDGET = 40_000;
const TOTAL_BUDGET = 200_000;
const DESKTOP = { width: 1000, height: 760 };
const PHONE = { width: 390, height: 844 };

const t0 = Date.now();
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

function gatewayConfig({ port, smtpPort, host, extra = '' }) {
  return (dir) => `# written by e2e/pages.mjs
listen: "127.0.0.1:${port}"
public_url: "http://${host}:${port}"
data_dir: "${path.join(dir, 'data')}"
upstream: "builtin:whoami"
access:
  allowed_domains: ["example.com"]
login:
  methods: [link, code]
  code_length: 6
  max_code_attempts: ${MAX_ATTEMPTS}
  resend_cooldown: ${COOLDOWN}s
  hint: "${HINT}"
  rate_limit:
    per_ip_per_minute: 1000
    per_email_per_hour: 1000
    per_email_burst: 1000
email:
  from: "Portcullis <auth@example.com>"
  transport: smtp
  smtp:
    host: 127.0.0.1
    port: ${smtpPort}
    security: none
    timeout: 5s
log_emails: true
${extra}`;
}

// ---------------------------------------------------------------- browser helpers
async function newPage(browser) {
  const context = await browser.newContext({ viewport: DESKTOP });
  context.setDefaultTimeout(STEP_TIMEOUT);
  context.setDefaultNavigationTimeout(STEP_TIMEOUT);
  const page = await context.newPage();
  return { context, page };
}

const pathOf = (page) => new URL(page.url()).pathname;

async function bodyText(page) {
  return (await page.locator('body').innerText().catch(() => '')).replace(/\s+/g, ' ').trim().slice(0, 400);
}

async function expectText(page, selector, wanted) {
  const loc = page.locator(selector);
  await loc.waitFor({ state: 'visible', timeout: STEP_TIMEOUT }).catch(async () => {
    throw new Failure(`element ${selector} not visible on ${page.url()}\npage text: ${await bodyText(page)}`);
  });
  const got = (await loc.innerText()).replace(/\s+/g, ' ').trim();
  expect(got === wanted, `${selector} on ${page.url()} reads "${got}", expected "${wanted}"`);
}

async function expectAbsent(page, selector, why) {
  const n = await page.locator(selector).count();
  expect(n === 0, `${selector} is on ${page.url()} (${why}): "${n ? (await page.locator(selector).first().innerText()).trim() : ''}"`);
}

/**
 * Runs `action` (a click or a reload) and waits until a new document has loaded: a form post
 * that answers 303 to the same URL, or a reload, is told apart from the page before it.
 */
async function navigates(page, action) {
  await page.evaluate(() => {
    window.__before = true;
  });
  await action();
  await page.waitForFunction(() => !window.__before && document.readyState === 'complete', null, { timeout: STEP_TIMEOUT });
}

/** Clicks a form button; the POST to `postPath` must not be refused (4xx/5xx). */
async function submit(page, selector, postPath) {
  let resp;
  await navigates(page, async () => {
    [resp] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === postPath),
      page.locator(selector).click(),
    ]);
  });
  expect(resp.status() < 400, `clicking ${selector}: POST ${postPath} answered ${resp.status()}; page says "${await bodyText(page)}"`);
}

async function reload(page) {
  await navigates(page, () => page.reload());
}

/** On the login page: type the address and submit; the "Check your email" page names it. */
async function requestMail(page, email) {
  await page.locator('#email').fill(email);
  await submit(page, '#submit', '/.auth/login');
  expect(pathOf(page) === '/.auth/check-email', `after the email form the browser is on ${page.url()}`);
  await expectText(page, 'h1', 'Check your email');
  await expectText(page, '#sent-to', email);
}

const mailsTo = (smtp, email) => smtp.messages.filter((m) => m.envelopeTo.includes(email)).length;

/** Waits long enough for a stray mail to arrive, then checks the count. */
async function expectMailCount(smtp, email, n, when) {
  await sleep(800);
  const got = mailsTo(smtp, email);
  expect(got === n, `${when}: ${got} mail(s) to ${email}, expected exactly ${n}`);
}

async function expectSignedIn(page, email) {
  await page.waitForURL((u) => u.pathname === '/dashboard', { timeout: STEP_TIMEOUT }).catch(async () => {
    throw new Failure(`expected the whoami page on /dashboard, the browser is on ${page.url()}: ${await bodyText(page)}`);
  });
  await expectText(page, '#email', email);
}

/** A wrong code that is well formed (6 digits), never the right one. */
const wrongCode = (code) => String((Number(code) + 1) % 1_000_000).padStart(6, '0');

async function typeCode(page, code) {
  await page.locator('#code').fill(code);
  await submit(page, '#submit-code', '/.auth/code');
}

const shots = [];
/**
 * Saves the page as it stands (no reload: a one-time notice stays) on a desktop, on a 390 px
 * phone (which must not scroll sideways) and in dark mode: pages-NAME-{desktop,mobile,dark}.png.
 */
async function screenshots(page, name) {
  const save = async (variant) => {
    const file = path.join(OUT, `pages-${name}-${variant}.png`);
    await page.screenshot({ path: file, fullPage: true });
    shots.push(file);
  };
  try {
    await save('desktop');
    await page.setViewportSize(PHONE);
    const r = await page.evaluate(() => ({ w: document.documentElement.clientWidth, s: document.documentElement.scrollWidth }));
    expect(r.s <= r.w, `${name}: ${r.s}px wide on a ${r.w}px phone screen (sideways scrolling)`);
    await save('mobile');
    await page.setViewportSize(DESKTOP);
    await page.emulateMedia({ colorScheme: 'dark' });
    await save('dark');
  } finally {
    await page.emulateMedia({ colorScheme: null });
    await page.setViewportSize(DESKTOP);
  }
  log(`     screenshots: e2e/output/pages-${name}-{desktop,mobile,dark}.png`);
}

// ---------------------------------------------------------------- the test
let gw;
let brandGw;
async function main() {
  await mkdir(OUT, { recursive: true });
  let smtp;
  let browser;
  let activePage = null;
  const overall = setTimeout(() => {
    console.error(`\nFAIL: the run exceeded ${TOTAL_BUDGET / 1000}s (in step ${currentStep})`);
    killGateways();
    process.exit(3);
  }, TOTAL_BUDGET + 15_000);
  overall.unref();

  try {
    await withTimeout(
      (async () => {
        smtp = await step('SMTP server and two gateways (default brand, "Acme Tools") started', async () => {
          const s = await startSmtp();
          const port = await freePort();
          gw = await startGateway({ config: gatewayConfig({ port, smtpPort: s.port, host: HOST }), healthPort: port, name: 'gateway' });
          gw.base = `http://${HOST}:${port}`;
          const bport = await freePort();
          brandGw = await startGateway({
            config: gatewayConfig({
              port: bport,
              smtpPort: s.port,
              host: BRAND_HOST,
              extra: `branding:\n  name: "Acme Tools"\n  accent: "${ACCENT}"\n  support: "help@example.com"\n`,
            }),
            healthPort: bport,
            name: 'branded',
          });
          brandGw.base = `http://${BRAND_HOST}:${bport}`;
          log(`     ${BIN}: ${gw.base}, ${brandGw.base}; smtp://127.0.0.1:${s.port}`);
          return s;
        });
        const base = gw.base;
        const protectedUrl = `${base}/dashboard?x=1`;

        browser = await step('headless Chromium launched', async () => {
          const b = await launchChromium(`MAP ${HOST} 127.0.0.1, MAP ${BRAND_HOST} 127.0.0.1`);
          log(`     Chromium ${b.version()}`);
          return b;
        });

        // ---- 1. refresh-safety
        {
          const { context, page } = await newPage(browser);
          activePage = page;
          const email = 'refresh@example.com';
          let first;
          await step('sign-in form: heading, hint, email field', async () => {
            await page.goto(protectedUrl);
            expect(pathOf(page) === '/.auth/login', `the protected URL led to ${page.url()}, not the login page`);
            await expectText(page, 'h1', 'Sign in');
            await expectText(page, '#hint', HINT);
            await page.locator('#email').waitFor({ state: 'visible' });
            await screenshots(page, 'login');
          });
          await step('refresh-safety: "Check your email" reloaded twice sends no second mail', async () => {
            await requestMail(page, email);
            await expectText(page, '#hint', HINT);
            await screenshots(page, 'check-email');
            first = extractLinkAndCode(await waitForMail(smtp, email, 0), base);
            await reload(page);
            await reload(page);
            await expectText(page, 'h1', 'Check your email');
            await expectText(page, '#sent-to', email);
            await expectMailCount(smtp, email, 1, 'after two reloads of "Check your email"');
          });
          await step(`refresh-safety: a wrong code leaves ${MAX_ATTEMPTS - 1} attempts, and reloading twice does not spend more`, async () => {
            await typeCode(page, wrongCode(first.code));
            expect(pathOf(page) === '/.auth/check-email', `a wrong code led to ${page.url()}`);
            await expectText(page, '#error', `That code is not right. ${MAX_ATTEMPTS - 1} attempts left.`);
            await expectText(page, '#attempts-left', `${MAX_ATTEMPTS - 1} attempts left.`);
            await screenshots(page, 'wrong-code');
            await reload(page);
            await reload(page);
            await expectText(page, 'h1', 'Check your email');
            await expectText(page, '#attempts-left', `${MAX_ATTEMPTS - 1} attempts left.`);
            await expectAbsent(page, '#error', 'the wrong-code message is shown once, not again on reload');
            await expectMailCount(smtp, email, 1, 'after a wrong code and two reloads');
          });
          await step("refresh-safety: the first mail's code still signs in", async () => {
            await typeCode(page, first.code);
            await expectSignedIn(page, email);
            await expectMailCount(smtp, email, 1, 'after signing in');
          });

          // ---- 3. signed-out notice
          await step('GET /.auth/logout shows a confirm button; after it the login page says "You are signed out."', async () => {
            await page.goto(`${base}/.auth/logout`);
            await expectText(page, 'h1', 'Sign out?');
            await expectText(page, 'main #email', email);
            await screenshots(page, 'logout-confirm');
            await submit(page, '#logout', '/.auth/logout');
            expect(pathOf(page) === '/.auth/login', `signing out led to ${page.url()}, not the login page`);
            await expectText(page, 'h1', 'Sign in');
            await expectText(page, '#notice', 'You are signed out.');
            await screenshots(page, 'signed-out');
            await page.goto(protectedUrl);
            expect(pathOf(page) === '/.auth/login', `after sign-out ${protectedUrl} led to ${page.url()}, not the login page`);
            await expectAbsent(page, '#notice', 'the signed-out notice is shown once');
          });
          await context.close();
        }

        // ---- 2. lockout, start again, resend countdown
        {
          const { context, page } = await newPage(browser);
          activePage = page;
          const email = 'lockout@example.com';
          let mail;
          await step(`lockout: ${MAX_ATTEMPTS} wrong codes lock the sign-in ("Too many wrong codes"), reloads keep it locked`, async () => {
            await page.goto(protectedUrl);
            await requestMail(page, email);
            mail = extractLinkAndCode(await waitForMail(smtp, email, 0), base);
            const wrong = wrongCode(mail.code);
            for (let left = MAX_ATTEMPTS - 1; left >= 1; left -= 1) {
              await typeCode(page, wrong);
              await expectText(page, '#error', `That code is not right. ${left} attempt${left === 1 ? '' : 's'} left.`);
              await expectText(page, '#attempts-left', `${left} attempt${left === 1 ? '' : 's'} left.`);
            }
            await typeCode(page, wrong);
            expect(pathOf(page) === '/.auth/check-email', `the last wrong code led to ${page.url()}`);
            await expectText(page, 'h1', 'Too many wrong codes');
            await expectText(page, '#message', 'After too many wrong codes this sign-in is locked, so nobody can keep guessing. Start again to get a new mail.');
            await expectText(page, '#action', 'Start again');
            await expectAbsent(page, '#code', 'a locked sign-in takes no more codes');
            await screenshots(page, 'locked');
            await reload(page);
            await expectText(page, 'h1', 'Too many wrong codes');
            await expectMailCount(smtp, email, 1, 'after the lockout and a reload');
          });
          await step('lockout: the right code no longer signs in (posted anyway, it answers the locked page)', async () => {
            await navigates(page, () =>
              page.evaluate((code) => {
                const f = document.createElement('form');
                f.method = 'post';
                f.action = '/.auth/code';
                const i = document.createElement('input');
                i.name = 'code';
                i.value = code;
                f.append(i);
                document.body.append(f);
                f.submit();
              }, mail.code),
            );
            expect(pathOf(page) === '/.auth/check-email', `the right code after the lockout led to ${page.url()}`);
            await expectText(page, 'h1', 'Too many wrong codes');
            await page.goto(`${base}/dashboard`);
            expect(pathOf(page) === '/.auth/login', `after the lockout ${base}/dashboard led to ${page.url()}, not the login page`);
          });
          await step('lockout: "Start again" opens the form with the address filled in; one click sends a new mail', async () => {
            await page.goto(`${base}/.auth/check-email`);
            await expectText(page, 'h1', 'Too many wrong codes');
            await navigates(page, () => page.locator('#action').click());
            expect(pathOf(page) === '/.auth/login', `"Start again" led to ${page.url()}`);
            const u = new URL(page.url());
            expect(u.searchParams.get('rd') === protectedUrl, `"Start again" lost the target: rd=${u.searchParams.get('rd')}`);
            const typed = await page.locator('#email').inputValue();
            expect(typed === email, `"Start again" fills in "${typed}", expected ${email}`);
            await submit(page, '#submit', '/.auth/login');
            await expectText(page, 'h1', 'Check your email');
            await expectText(page, '#sent-to', email);
            await waitForMail(smtp, email, 1);
            await expectMailCount(smtp, email, 2, 'after "Start again"');
          });
          await step(`resend: "Send a new mail" is disabled with the seconds left, enabled after ${COOLDOWN}s; a click sends exactly one mail`, async () => {
            const resend = page.locator('#resend');
            const wait = Number(await resend.getAttribute('data-wait'));
            expect(wait >= 1 && wait <= COOLDOWN, `#resend data-wait="${wait}", expected 1..${COOLDOWN}`);
            expect(await resend.isDisabled(), '#resend is enabled during the cooldown');
            const label = (await page.locator('#resend-wait').innerText()).trim();
            expect(/^\(in [1-4] seconds?\)$/.test(label), `#resend-wait reads "${label}", expected "(in N seconds)"`);
            await screenshots(page, 'resend-wait');
            await page.waitForFunction(() => !document.getElementById('resend').disabled, null, { timeout: (COOLDOWN + 3) * 1000 });
            const after = (await page.locator('#resend-wait').innerText()).trim();
            expect(after === '', `#resend-wait still reads "${after}" after the cooldown`);
            await expectText(page, '#resend', 'Send a new mail');
            // Without the script: the server's page says the same once the cooldown is over.
            await reload(page);
            expect(!(await resend.isDisabled()), '#resend is disabled on a page loaded after the cooldown');
            expect((await resend.getAttribute('data-wait')) === '0', `#resend data-wait="${await resend.getAttribute('data-wait')}" after the cooldown`);
            await screenshots(page, 'resend-ready');
            await submit(page, '#resend', '/.auth/resend');
            await expectText(page, 'h1', 'Check your email');
            await expectText(page, '#notice', 'A new mail is on its way. The previous link and code no longer work.');
            expect(await resend.isDisabled(), '#resend is enabled right after a resend');
            await screenshots(page, 'resent');
            await waitForMail(smtp, email, 2);
            await reload(page);
            await reload(page);
            await expectMailCount(smtp, email, 3, 'after one resend and two reloads');
          });
          await step("resend: the newest mail's code signs in", async () => {
            const newest = extractLinkAndCode(smtp.messages.filter((m) => m.envelopeTo.includes(email))[2], base);
            await typeCode(page, newest.code);
            await expectSignedIn(page, email);
          });
          await context.close();
        }

        // ---- 4. branding
        {
          const { context, page } = await newPage(browser);
          activePage = page;
          const b = brandGw.base;
          const email = 'brand@example.com';
          const checkBrand = async (what) => {
            const name = (await page.locator('#brand').textContent()).trim();
            expect(name === 'Acme Tools', `${what}: the header names "${name}", expected "Acme Tools"`);
            const title = await page.title();
            expect(title.endsWith('· Acme Tools'), `${what}: the title is "${title}"`);
            await expectText(page, '#support', 'Need help? help@example.com');
            const href = await page.locator('#support a').getAttribute('href');
            expect(href === 'mailto:help@example.com', `${what}: the support link is ${href}`);
            const main = await page.locator('main').innerText();
            expect(!main.includes('Portcullis'), `${what}: the page still says "Portcullis":\n${main}`);
          };
          await step('branding: name in the header and title, accent on the primary button, support contact', async () => {
            await page.goto(`${b}/dashboard`);
            expect(pathOf(page) === '/.auth/login', `the branded gateway sent ${b}/dashboard to ${page.url()}`);
            await checkBrand('login page');
            const bg = await page.locator('#submit').evaluate((el) => getComputedStyle(el).backgroundColor);
            expect(bg === 'rgb(29, 78, 216)', `the primary button is ${bg}, expected the accent ${ACCENT} = rgb(29, 78, 216)`);
            const fg = await page.locator('#submit').evaluate((el) => getComputedStyle(el).color);
            expect(fg === 'rgb(255, 255, 255)', `the primary button text is ${fg}, expected white`);
            await page.emulateMedia({ colorScheme: 'dark' });
            try {
              const dark = await page.locator('#submit').evaluate((el) => ({ bg: getComputedStyle(el).backgroundColor, fg: getComputedStyle(el).color }));
              expect(dark.bg !== 'rgb(29, 78, 216)' && dark.bg !== 'rgb(109, 140, 255)', `dark mode: the primary button is ${dark.bg} (not the derived accent shade)`);
              expect(dark.fg === 'rgb(15, 18, 24)', `dark mode: the primary button text is ${dark.fg}, expected the dark text rgb(15, 18, 24)`);
            } finally {
              await page.emulateMedia({ colorScheme: null });
            }
            await screenshots(page, 'brand-login');
            await requestMail(page, email);
            await checkBrand('check-email page');
            const resendColour = await page.locator('#resend').evaluate((el) => getComputedStyle(el).color);
            expect(resendColour === 'rgb(29, 78, 216)', `the secondary button text is ${resendColour}, expected the accent`);
            await screenshots(page, 'brand-check-email');
            const mail = await waitForMail(smtp, email, 0);
            expect(mail.text.includes('sign in to Acme Tools'), `the branded mail does not name "Acme Tools":\n${mail.text}`);
            expect(mail.html.includes('Sign in to Acme Tools'), 'the branded HTML mail has no "Sign in to Acme Tools" heading');
            expect(mail.text.includes('help@example.com'), `the branded mail does not give the support contact:\n${mail.text}`);
            const { code } = extractLinkAndCode(mail, b);
            await typeCode(page, code);
            await expectSignedIn(page, email);
            await page.goto(`${b}/.auth/logout`);
            await checkBrand('logout page');
            await screenshots(page, 'brand-logout-confirm');
          });
          await context.close();
        }
        activePage = null;
      })(),
      TOTAL_BUDGET,
      'the whole run',
    );
    console.log(`\nOK: all ${stepNo} steps passed in ${((Date.now() - t0) / 1000).toFixed(1)}s; ${shots.length} screenshots in ${OUT}`);
    return 0;
  } catch (err) {
    console.error(`\nFAIL in step ${currentStep}:\n  ${err instanceof Failure ? err.message : err?.stack || err}`);
    if (activePage) {
      try {
        console.error(`  browser URL: ${activePage.url()}`);
        const f = path.join(OUT, 'pages-failure.png');
        await withTimeout(activePage.screenshot({ path: f, fullPage: true }), 5000, 'failure screenshot');
        console.error(`  failure screenshot: ${f}`);
      } catch {
        /* best effort */
      }
    }
    for (const g of [gw, brandGw]) {
      if (!g) continue;
      if (g.exited) console.error(`  gateway exited: code ${g.exited.code}, signal ${g.exited.signal}`);
      console.error(`  last gateway log lines:\n${g.output.slice(-20).map((l) => `    ${l}`).join('\n') || '    (none)'}`);
    }
    if (smtp) console.error(`  SMTP server received ${smtp.messages.length} message(s)`);
    return 1;
  } finally {
    if (browser) await withTimeout(browser.close(), 10_000, 'closing the browser').catch((e) => console.error(`  ${e.message}`));
    await stopGateway(gw).catch((e) => console.error(`  stopping the gateway: ${e.message}`));
    await stopGateway(brandGw).catch((e) => console.error(`  stopping the gateway: ${e.message}`));
    if (smtp) await new Promise((r) => smtp.server.close(r));
  }
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.error(`\ninterrupted (${sig}) in step ${currentStep}`);
    killGateways();
    process.exit(130);
  });
}

const code = await main();
log(`done (exit ${code})`);
process.exit(code);
