// The console's browser steps (run by tests/console.rs, which starts the server and passes its address, keys and
// photos in the environment): each step acts as a person would — typing, clicking, choosing files — and checks
// what the page then shows. A failed check exits non-zero with the step's name; screenshots go to $SCREENSHOTS.

import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const base = process.env.FACEMATCH_URL;
const keys = JSON.parse(process.env.FACEMATCH_KEYS);
const photos = JSON.parse(process.env.FACEMATCH_PHOTOS);
const shots = process.env.SCREENSHOTS;
const TIMEOUT = 60_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic'],
});

const problems = [];
const pages = [];
async function person(name) {
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  pages.push([name, page]);
  page.setDefaultTimeout(TIMEOUT);
  // A policy violation or a script error is a failure of the console, whatever the steps see.
  page.on('console', (message) => { if (message.type() === 'error' && !/Failed to load resource/.test(message.text())) problems.push(`${name}: ${message.text()}`); });
  page.on('pageerror', (error) => problems.push(`${name}: ${error.message}`));
  return page;
}

async function signIn(page, key, purpose = 'console test') {
  await page.goto(`${base}/console/`);
  await page.getByLabel('API key').fill(key);
  await page.locator('#purpose').fill(purpose);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#whoami').waitFor();
}

async function step(name, body) {
  const started = Date.now();
  try {
    await body();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    console.log(`FAIL ${name}: ${error.stack ?? error}`);
    // What each person saw when it failed, for whoever reads the CI log.
    for (const [who, page] of pages) {
      await page.screenshot({ path: join(shots, `failed-${who.replaceAll(' ', '-')}.png`), fullPage: true }).catch(() => {});
      console.log(`  ${who} was at ${page.url()}`);
    }
    if (problems.length) console.log(`  page errors: ${problems.join('; ')}`);
    await browser.close();
    process.exit(1);
  }
}

const officer = await person('officer');
const first = await person('first reviewer');
const second = await person('second reviewer');
let hitId;

await step('a wrong key is refused and the right one signs in', async () => {
  await officer.goto(`${base}/console/`);
  await officer.getByLabel('API key').fill('fmk_000000000000_' + '0'.repeat(64));
  await officer.getByRole('button', { name: 'Sign in' }).click();
  await officer.locator('#signin-error').filter({ hasText: /\S/ }).waitFor();
  await signIn(officer, keys.officer);
  assert.match(await officer.locator('#whoami').textContent(), /Officer Ana · checkpoint/);
  assert.equal(await officer.locator('#nav-review').count(), 0, 'an officer is offered no review');
  assert.ok(!officer.url().includes(keys.officer), 'the key never appears in the address');
});

await step('an investigator searches a photo and sees the right candidate first', async () => {
  await signIn(first, keys.first);
  await first.locator('#nav-search').click();
  await first.locator('#search-photo').setInputFiles(photos.probe);
  await first.locator('#search-mode').selectOption('investigation');
  await first.locator('#search-submit').click();
  const card = first.locator('.face-result').first();
  await card.waitFor();
  const top = card.locator('.candidate').first();
  assert.match(await top.locator('.name').textContent(), new RegExp(`^1\\. ${photos.probe_name}$`));
  // The face boxed on the photo, and the face and the enrolled thumbnail side by side at one size.
  assert.ok(await first.locator('.photo svg rect').count() >= 1);
  await top.locator('img.faceimg').waitFor();
  await first.waitForFunction(() => document.querySelector('.candidate img.faceimg')?.naturalWidth > 0);
  const probe = await card.locator('canvas.faceimg').boundingBox();
  const enrolled = await top.locator('img.faceimg').boundingBox();
  assert.equal(Math.round(probe.width), Math.round(enrolled.width));
  assert.equal(Math.round(probe.height), Math.round(enrolled.height));
  await first.screenshot({ path: join(shots, '1-search.png'), fullPage: true });
});

await step('a checkpoint alert reaches the open console and is acknowledged', async () => {
  await officer.locator('#nav-alerts').click();
  await officer.locator('#no-alerts').waitFor();
  // Another desk's officer searches the same traveller: an identification alert.
  const form = new FormData();
  form.append('photo', new Blob([readFileSync(photos.probe)], { type: 'image/jpeg' }), 'probe.jpg');
  form.append('checkpoint', 'gate 3');
  form.append('case', 'console case');
  const answer = await fetch(`${base}/v1/search`, { method: 'POST', body: form, headers: { authorization: `Bearer ${keys.desk}` } });
  assert.equal(answer.status, 200);
  const hits = (await answer.json()).hits;
  assert.equal(hits.length, 1, 'the search alerts once');
  const card = officer.locator(`.alert-card[data-hit="${hits[0]}"]`);
  await card.waitFor();
  assert.match(await card.textContent(), new RegExp(photos.probe_name));
  assert.match(await card.textContent(), /gate 3/);
  assert.ok(await officer.locator('#alert-banner').isVisible(), 'the banner tells of the alert');
  assert.equal(await officer.locator('#alert-count').textContent(), '1');
  await officer.screenshot({ path: join(shots, '2-alert.png'), fullPage: true });
  await card.getByRole('button', { name: 'Acknowledge' }).click();
  await officer.locator('#no-alerts').waitFor();
});

await step('an investigator submits a job and watches it to its end', async () => {
  await first.locator('#nav-jobs').click();
  await first.getByLabel('Case reference (required)').fill('console case');
  await first.locator('#job-files').setInputFiles(photos.job);
  await first.locator('#job-submit').click();
  await first.locator('#job-progress').waitFor();
  await first.locator('.badge.job-done').waitFor({ timeout: 180_000 });
  assert.equal(await first.locator('#job-done').textContent(), `${photos.job.length} of ${photos.job.length}`);
  assert.ok(Number(await first.locator('#job-faces').textContent()) >= photos.job.length);
  assert.ok(Number(await first.locator('#job-hits').textContent()) >= 1, 'the job found its people');
  await first.screenshot({ path: join(shots, '3-job.png'), fullPage: true });
  await first.locator('#job-hits-link').click();
  const row = first.locator('#queue tr.selectable').first();
  await row.waitFor();
  hitId = await row.getAttribute('data-hit');
});

await step('two reviewers confirm a hit, and the same one cannot decide twice', async () => {
  await first.goto(`${base}/console/#/review/${hitId}`);
  await first.locator('#decision-form').waitFor();
  await first.waitForFunction(() => [...document.querySelectorAll('img.faceimg')].every((img) => img.naturalWidth > 0));
  await first.keyboard.press('p');
  await first.locator('#decision-comment').fill('Same ear shape, same scar over the left eyebrow.');
  await first.locator('#decision-submit').click();
  await first.locator('#own-decision').waitFor();
  assert.match(await first.locator('h1 .badge').textContent(), /awaiting second/);

  await signIn(second, keys.second);
  await second.goto(`${base}/console/#/review?state=awaiting_second`);
  await second.locator(`#queue tr[data-hit="${hitId}"]`).click();
  await second.locator('#decision-form').waitFor();
  await second.getByLabel('Potential match').check();
  await second.locator('#decision-comment').fill('Agree: the features match, no contradicting detail.');
  await second.locator('#decision-submit').click();
  await second.locator('h1 .badge.confirmed').waitFor();
  assert.equal(await second.locator('#decisions li').count(), 2);
  await second.screenshot({ path: join(shots, '4-confirmed.png'), fullPage: true });
});

await step('the confirmed hit is exported for its case', async () => {
  await second.goto(`${base}/console/#/review?state=confirmed&case=console%20case`);
  await second.locator(`#queue tr[data-hit="${hitId}"]`).waitFor();
  const [download] = await Promise.all([
    second.waitForEvent('download'),
    second.locator('#export-form button').click(),
  ]);
  const path = join(process.env.DOWNLOADS, download.suggestedFilename());
  await download.saveAs(path);
  const lines = readFileSync(path, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
  assert.ok(lines.some((hit) => String(hit.id) === hitId && hit.state === 'confirmed'), 'the export holds the confirmed hit');
  assert.ok(lines.every((hit) => hit.state === 'confirmed'));
});

await step('no script error and no policy violation on any page', async () => {
  assert.deepEqual(problems, []);
});

await browser.close();
console.log('all steps passed');
