// Test-only: a person's walk through the hub's web page in a real browser (Debian's chromium, driven by
// playwright-core), run by cli/tests/it/web.rs. Installed by scripts/install-test-peers.sh.
//
//   node scripts/web-test/browser.mjs      (environment below; exits non-zero on the first failure)
//
// Environment:
//   HUB          the hub's URL (http://127.0.0.1:PORT)
//   OUT          a directory for the browser profile, screenshots and downloads
//   OIDC_USER, OIDC_PASSWORD   the person's sign-in at the test OpenID provider's login page
//   DATASET      a dataset the person may read and write (two versions, tag TAG on the newer)
//   TAG          the tag moved through the form
//   FORBIDDEN    a dataset the person may not read
//   CSV_PATH, SQLITE_PATH, SQLITE_TABLE   files in DATASET's newer version to preview
//   DOWNLOAD_PATH, DOWNLOAD_SOURCE        a file in it, and the local file it was pushed from
//   CHROMIUM     the browser (default /usr/bin/chromium)
//
// Every page visited is screenshot (checked not blank: size and pixel variance) and checked with
// axe-core; a serious or critical violation fails the run.
import { readFileSync, mkdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const env = process.env;
const need = (k) => { if (!env[k]) throw new Error(`${k} is not set`); return env[k]; };
const HUB = need('HUB');
const OUT = need('OUT');
const DATASET = need('DATASET');
const TAG = need('TAG');
mkdirSync(OUT, { recursive: true });

const checks = [];
const ok = (what) => { checks.push(what); console.log(`ok - ${what}`); };
const fail = (what) => { throw new Error(what); };
const expect = (cond, what) => { if (!cond) fail(what); ok(what); };

// One retry of the launch alone: a browser that fails to start on a loaded machine is not the page's fault.
async function launch(attempt) {
  try {
    return await chromium.launchPersistentContext(path.join(OUT, `profile-${attempt}`), {
      executablePath: env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      acceptDownloads: true,
      viewport: { width: 1280, height: 900 },
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--disable-default-apps'],
    });
  } catch (e) {
    console.error(`# chromium did not start (attempt ${attempt}): ${e.message}`);
    if (attempt > 1) {
      console.log('0 passed, 1 failed');
      process.exit(1);
    }
    return launch(attempt + 1);
  }
}
const context = await launch(1);
// Generous: a loaded CI machine starts chromium and the provider slowly (nothing here waits on a timer).
context.setDefaultTimeout(90_000);
const page = context.pages()[0] || await context.newPage();
let shots = 0;

// A screenshot that is not blank: a real PNG, and pixels that vary (decoded by the browser itself).
async function screenshot(name) {
  const file = path.join(OUT, `${String(++shots).padStart(2, '0')}-${name}.png`);
  const png = await page.screenshot({ path: file, fullPage: true });
  expect(png.subarray(1, 4).toString() === 'PNG' && statSync(file).size > 5000, `${name}: screenshot is a PNG of some size`);
  const probe = await context.newPage();
  const stats = await probe.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width; c.height = img.height;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let sum = 0; let sq = 0; let n = 0; const colors = new Set();
    for (let i = 0; i < d.length; i += 4 * 7) {
      const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      sum += y; sq += y * y; n += 1;
      if (colors.size < 1000) colors.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    }
    const mean = sum / n;
    return { variance: sq / n - mean * mean, colors: colors.size };
  }, png.toString('base64'));
  await probe.close();
  expect(stats.variance > 50 && stats.colors > 10, `${name}: screenshot is not blank (variance ${stats.variance.toFixed(0)}, ${stats.colors} colours)`);
}

// axe-core on the page as it is; serious and critical violations fail.
async function accessible(name) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const minor = result.violations.filter((v) => !bad.includes(v)).map((v) => v.id);
  if (minor.length) console.log(`# ${name}: minor accessibility findings: ${minor.join(', ')}`);
  expect(bad.length === 0, `${name}: no serious accessibility violation${bad.length ? `: ${JSON.stringify(bad.map((v) => [v.id, v.help, v.nodes.map((x) => x.target)]))}` : ''}`);
}

async function visit(name) {
  await screenshot(name);
  await accessible(name);
}

try {
  // Anonymous: nothing to read, a way to sign in.
  let res = await page.goto(`${HUB}/`);
  expect(res.status() === 200, 'the front page answers');
  expect(res.headers()['content-security-policy']?.includes("default-src 'none'"), 'the page has a strict CSP');
  await visit('anonymous');
  await page.getByRole('link', { name: 'Sign in' }).first().click();
  await page.waitForURL('**/web/login');
  await visit('sign-in');

  // The identity provider's own login page (authorization code with PKCE).
  await page.getByRole('link', { name: /identity provider/ }).click();
  await page.waitForSelector('#username');
  expect(!page.url().startsWith(HUB), `the browser is at the identity provider (${page.url()})`);
  await screenshot('provider-login');
  await page.fill('#username', need('OIDC_USER'));
  await page.fill('#password', need('OIDC_PASSWORD'));
  await page.click('button[type=submit]');
  await page.waitForURL(`${HUB}/`);
  expect((await page.textContent('header')).includes(`Signed in as ${need('OIDC_USER')}`), 'signed in, back at the hub');
  const cookies = await context.cookies(HUB);
  const session = cookies.find((c) => c.name === 'aetherfs_session');
  expect(session && session.httpOnly && session.sameSite === 'Lax', 'the session cookie is HttpOnly and SameSite=Lax');
  await visit('datasets');

  // Search, then the dataset.
  await page.fill('#q', DATASET.split('/').pop());
  await page.click('form.search button');
  await page.waitForURL(/\?q=/);
  await page.getByRole('link', { name: DATASET, exact: true }).click();
  await page.waitForURL(`**/web/datasets/${DATASET}`);
  const body = await page.textContent('main');
  expect(body.includes(`History of ${TAG}`) && body.includes('Logical') && body.includes('Usage'), 'the dataset page shows history, sizes and usage');
  await visit('dataset');

  // The newer version's tree, a directory, the CSV file and its preview.
  await page.locator('section[aria-labelledby=sizes] tbody tr').first().locator('a').click();
  await page.waitForURL(/\/-\/tree\//);
  await visit('tree');
  const treeUrl = page.url().split('?')[0];
  await page.goto(`${treeUrl}?path=${encodeURIComponent(need('CSV_PATH'))}`);
  await page.getByRole('link', { name: 'Preview' }).click();
  await page.waitForURL(/\/-\/preview\//);
  expect(await page.locator('table.csv tbody tr').count() > 0, 'the CSV preview is a table');
  await visit('csv-preview');

  // Download a file through the page and compare its bytes.
  await page.goto(`${treeUrl}?path=${encodeURIComponent(need('DOWNLOAD_PATH'))}`);
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download' }).click()]);
  const saved = path.join(OUT, 'downloaded');
  await download.saveAs(saved);
  expect(Buffer.compare(readFileSync(saved), readFileSync(need('DOWNLOAD_SOURCE'))) === 0, 'the downloaded bytes equal the source file');

  // The SQLite preview: tables, columns, row counts.
  await page.goto(`${treeUrl.replace('/-/tree/', '/-/preview/')}?path=${encodeURIComponent(need('SQLITE_PATH'))}`);
  expect((await page.textContent('table.sqlite')).includes(need('SQLITE_TABLE')), 'the SQLite preview lists its tables');
  await visit('sqlite-preview');

  // A diff between the two versions (the form preselects the older and the newer).
  await page.goto(`${HUB}/web/datasets/${DATASET}`);
  await page.getByRole('button', { name: 'Show the diff' }).click();
  await page.waitForURL(/\/-\/diff\?/);
  const diff = await page.textContent('main');
  expect(diff.includes('added') && diff.includes('New bytes') && diff.includes('reused'), 'the diff shows changes and new vs reused bytes');
  await visit('diff');

  // Move the tag to the older version through the form.
  await page.goto(`${HUB}/web/datasets/${DATASET}`);
  const select = page.locator(`#to-${TAG}`);
  const options = await select.locator('option').evaluateAll((os) => os.map((o) => o.value));
  const current = await select.inputValue();
  const target = options.find((o) => o !== current);
  await select.selectOption(target);
  await page.getByRole('button', { name: 'Move' }).first().click();
  await page.waitForURL(`**/web/datasets/${DATASET}`);
  const firstRow = await page.locator('.tagbox').filter({ hasText: `History of ${TAG}` }).locator('tbody tr').first().textContent();
  expect(firstRow.includes(need('OIDC_USER')), `the tag moved, recorded as ${need('OIDC_USER')}`);

  // A cross-site form without the token is refused, even with the session cookie (forged Origin).
  const forged = await page.request.post(`${HUB}/web/datasets/${DATASET}/-/tags/${TAG}`, {
    form: { action: 'delete' }, headers: { Origin: 'http://evil.example' }, maxRedirects: 0,
  });
  expect(forged.status() === 403, `a cross-site POST is refused (${forged.status()})`);
  const noToken = await page.request.post(`${HUB}/web/datasets/${DATASET}/-/tags/${TAG}`, {
    form: { action: 'delete' }, headers: { Origin: HUB }, maxRedirects: 0,
  });
  expect(noToken.status() === 403, `a same-origin POST without the CSRF token is refused (${noToken.status()})`);
  await page.goto('about:blank');
  await page.setContent(`<form method="post" action="${HUB}/web/datasets/${DATASET}/-/tags/${TAG}"><input name="action" value="delete"></form>`);
  const [attack] = await Promise.all([page.waitForNavigation(), page.evaluate(() => document.forms[0].submit())]);
  expect(attack.status() === 403, `a form on another page is refused (${attack.status()})`);
  await page.goto(`${HUB}/`);
  expect((await page.textContent('header')).includes('Signed in'), 'the refused form left the session alone');

  // A dataset the person may not read.
  res = await page.goto(`${HUB}/web/datasets/${need('FORBIDDEN')}`);
  expect(res.status() === 403 && (await page.textContent('main')).includes('may not read'), 'a dataset the person may not read is a 403 page');
  await visit('forbidden');

  // Signing out ends the session.
  await page.goto(`${HUB}/`);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(`${HUB}/`);
  expect(!(await page.textContent('header')).includes('Signed in'), 'signed out');
  console.log(`${checks.length} passed, 0 failed`);
} catch (e) {
  await page.screenshot({ path: path.join(OUT, 'failure.png'), fullPage: true }).catch(() => {});
  const text = await page.textContent('body').catch(() => '');
  console.error(`not ok - ${e.message}\n(at ${page.url()}: ${String(text).replace(/\s+/g, ' ').slice(0, 800)})`);
  console.log(`${checks.length} passed, 1 failed`);
  process.exitCode = 1;
} finally {
  await context.close();
}
