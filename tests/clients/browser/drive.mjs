// Drives Debian's Chromium through one browser upload and prints what happened as JSON lines
// on stdout (the last one is the result). Used by tests/tests/browser.rs:
//
//   node drive.mjs '{"page":"tus","pagePort":4321,"endpoint":"http://localhost:8080/files/",
//                    "file":"/tmp/a.bin","options":{"chunkSize":5242880}}'
//
// The pages are served here on http://localhost:<pagePort>, another origin than Tusk's, so
// every request is a CORS request, as from an app. Settings:
//   page        "tus" (tus-js-client, options as in pages/tus-page.js), "uppy" (Dashboard), or
//               "compose" (docker compose's upload page, a Dashboard too)
//   cookie      {name, value}: a cookie for localhost (sent only with withCredentials)
//   throttle    upload bytes per second (DevTools network throttling), to keep an upload
//               in flight while the test acts on the server
//   screenshot  a PNG path for the page once the upload ended
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const settings = JSON.parse(process.argv[2]);
const emit = (line) => process.stdout.write(JSON.stringify(line) + '\n');

const files = {
  // docker compose's upload page, as its image serves it (deploy/docker/upload-page).
  '/compose/index.html': join(here, '../../../deploy/docker/upload-page/index.html'),
  '/compose/vendor/uppy.min.js': join(here, 'node_modules/uppy/dist/uppy.min.js'),
  '/compose/vendor/uppy.min.css': join(here, 'node_modules/uppy/dist/uppy.min.css'),
  '/vendor/tus.min.js': join(here, 'node_modules/tus-js-client/dist/tus.min.js'),
  '/vendor/uppy.min.js': join(here, 'node_modules/uppy/dist/uppy.min.js'),
  '/vendor/uppy.min.css': join(here, 'node_modules/uppy/dist/uppy.min.css'),
};
const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };

const pages = createServer(async (req, res) => {
  const path = new URL(req.url, 'http://localhost').pathname;
  if (path === '/favicon.ico') return res.writeHead(204).end();
  const file = files[path] ?? (/^\/[a-z-]+\.(html|js)$/.test(path) ? join(here, 'pages', path) : null);
  try {
    if (!file) throw new Error('not found');
    const body = await readFile(file);
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' });
    res.end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((resolve) => pages.listen(settings.pagePort, '127.0.0.1', resolve));

// Never a downloaded browser: Debian's, with the flags this machine's closed network needs.
const browser = await chromium.launch({
  executablePath: process.env.TUSK_CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
let result;
try {
  const context = await browser.newContext();
  if (settings.cookie) {
    await context.addCookies([{ ...settings.cookie, domain: 'localhost', path: '/' }]);
  }
  const page = await context.newPage();
  page.on('console', (msg) => emit({ event: 'console', text: msg.text() }));
  page.on('pageerror', (error) => emit({ event: 'pageerror', text: String(error) }));
  await page.exposeFunction('report', (line) => emit(line));
  if (settings.throttle) {
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: settings.throttle,
    });
  }
  const origin = `http://localhost:${settings.pagePort}`;
  const timeout = settings.timeoutMs ?? 120000;
  if (settings.page === 'uppy' || settings.page === 'compose') {
    const path = settings.page === 'uppy' ? 'uppy.html' : 'compose/index.html';
    await page.goto(`${origin}/${path}?endpoint=${encodeURIComponent(settings.endpoint)}`);
    await page.locator('.uppy-Dashboard-input').first().setInputFiles(settings.file);
    await page.locator('.uppy-StatusBar-actionBtn--upload').click();
    await page.waitForFunction(() => window.uppyResult, null, { timeout });
    result = await page.evaluate(() => window.uppyResult);
  } else {
    await page.goto(`${origin}/tus.html`);
    await page.locator('#file').setInputFiles(settings.file);
    result = await page.evaluate(
      (options) => window.runUpload(options),
      { endpoint: settings.endpoint, ...settings.options },
    );
  }
  if (settings.screenshot) await page.screenshot({ path: settings.screenshot, fullPage: true });
} catch (error) {
  result = { ok: false, error: String(error) };
} finally {
  await browser.close();
  pages.close();
}
emit({ event: 'result', ...result });
