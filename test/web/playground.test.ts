import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gql, startTestPlatform, type TestPlatform } from '../platform/helpers';

const CHROMIUM = '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
/** An <img> as the page sees it. */
interface LoadedImage {
  complete: boolean;
  naturalWidth: number;
}

/** What the page keeps in localStorage (read through Playwright: the tests' tsconfig has no DOM types). */
const storedEntries = async (page: Page) => (await page.context().storageState()).origins.flatMap((o) => o.localStorage);

if (!hasChromium) console.warn(`${CHROMIUM} not found: the playground's browser tests are skipped`);

describe.skipIf(!hasChromium)('the web playground in a real browser', () => {
  let platform: TestPlatform;
  let browser: Browser;
  let page: Page;
  let origin: string;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    platform = await startTestPlatform();
    origin = new URL(platform.url).origin;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
    page = await browser.newPage({ viewport: { width: 1100, height: 1400 } });
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(`${origin}/`);
  });
  afterAll(async () => {
    await browser?.close();
    await platform?.stop();
  });

  it('shows the API error for a wrong key and keeps nothing', async () => {
    await page.getByLabel('Or paste an API key').fill('not-a-key');
    await page.getByRole('button', { name: 'Use key' }).click();
    await expect.poll(() => page.locator('#account-error').textContent()).not.toBe('');
    expect(await storedEntries(page)).toEqual([]);
    expect(await page.locator('#workspace').isHidden()).toBe(true);
  });

  it('signs up, creates a model on the bundled base model and generates an image through the UI', async () => {
    await page.getByLabel('Email').fill('web@example.org');
    await page.getByRole('button', { name: 'Sign up' }).click();
    await expect.poll(() => page.locator('#me-email').textContent()).toBe('web@example.org');
    expect(await page.locator('#signed-out').isHidden()).toBe(true);
    expect(await page.locator('#account-error').textContent()).toBe('');
    const secret = await page.locator('#new-secret-value').textContent();
    expect(await storedEntries(page)).toEqual([{ name: 'bigdiffusion.apiKey', value: secret }]);

    const models = page.locator('#models');
    await models.getByLabel('Name').fill('first');
    await models.getByLabel('Base model').selectOption({ label: 'bundled-tiny-sd' });
    await page.getByRole('button', { name: 'Create model' }).click();
    await expect.poll(() => page.locator('#model-rows').textContent()).toContain('bundled-tiny-sd');

    const generate = page.locator('#generate');
    await generate.getByLabel('Prompt').fill('a photo of a dog');
    await generate.getByLabel('Steps').fill('3');
    await generate.getByLabel('Seed (blank: random)').fill('11');
    await page.getByRole('button', { name: 'Generate' }).click();
    const image = page.locator('#gallery img').first();
    await image.waitFor({ timeout: 60_000 });
    await expect.poll(() => image.evaluate((img) => {
      const { complete, naturalWidth } = img as unknown as LoadedImage;
      return complete ? naturalWidth : 0;
    })).toBeGreaterThan(0);
    expect(await page.locator('#generate-error').textContent()).toBe('');
    expect(await page.locator('#generate-progress').getAttribute('value')).toBe('1');
    expect(await page.locator('#generate-status').textContent()).toContain('SUCCEEDED');
    await page.getByRole('button', { name: 'Refresh' }).click();
    await expect.poll(() => page.locator('#job-rows').textContent()).toContain('GENERATE');

    await page.screenshot({ path: path.join(os.tmpdir(), 'playground.png'), fullPage: true });
    expect(pageErrors).toEqual([]);
  });

  it('uploads photos, fine-tunes a new model with its loss drawn live, and lists the model with its concept', async () => {
    const fineTune = page.locator('#finetune');
    const photo = async (seed: number, size = 80) => ({
      name: `photo-${seed}.png`,
      mimeType: 'image/png',
      buffer: await sharp({ create: { width: size, height: size, channels: 3, background: { r: 40 * seed, g: 120, b: 255 - 50 * seed } } })
        .png()
        .toBuffer(),
    });
    await fineTune.getByLabel('Photos').setInputFiles([await photo(1), await photo(2)]);
    await fineTune.getByLabel('Category').fill('mug');
    await fineTune.getByLabel('Steps').fill('2');
    await fineTune.getByRole('button', { name: 'Upload and fine-tune' }).click();
    await expect.poll(() => page.locator('#finetune-error').textContent()).toMatch(/3 to 8 photos \(2 chosen\)/);

    // The API refuses photos under the model's training size: its message is shown, no job is.
    await fineTune.getByLabel('Photos').setInputFiles([await photo(4, 32), await photo(5, 32), await photo(6, 32)]);
    await fineTune.getByRole('button', { name: 'Upload and fine-tune' }).click();
    await expect.poll(() => page.locator('#finetune-error').textContent()).toMatch(/smaller than 64x64/);
    expect(await page.locator('#finetune-job').isHidden()).toBe(true);

    await fineTune.getByLabel('Photos').setInputFiles([await photo(1), await photo(2), await photo(3)]);
    await fineTune.getByLabel(/New model's name/).fill('my mug');
    await fineTune.getByRole('button', { name: 'Upload and fine-tune' }).click();
    await expect.poll(() => page.locator('#finetune-status').textContent(), { timeout: 90_000 }).toMatch(/^SUCCEEDED: step 2 of 2, loss \d/);
    expect(await page.locator('#finetune-error').textContent()).toBe('');
    const points = await page.locator('#loss-chart polyline').getAttribute('points');
    expect(points).toMatch(/^[\d.]+,[\d.]+( [\d.]+,[\d.]+)*$/); // one vertex per step with a loss
    const row = page.locator('#model-rows tr', { hasText: 'my mug' });
    await expect.poll(() => row.textContent()).toMatch(/v1.* mug \(OBJECT\)/);
    await expect.poll(() => page.locator('#job-rows').textContent()).toContain('FINETUNE');
    await page.screenshot({ path: path.join(os.tmpdir(), 'playground-finetune.png'), fullPage: true });
    expect(pageErrors).toEqual([]);
  });

  it('keeps the key across a reload', async () => {
    await page.reload();
    await expect.poll(() => page.locator('#me-email').textContent()).toBe('web@example.org');
    expect(await page.locator('#new-secret').isHidden()).toBe(true);
  });

  it('shows why a stored key that was revoked no longer works, and forgets it', async () => {
    const [{ value: key }] = await storedEntries(page);
    const { data } = await gql(platform.url, '{ apiKeys { nodes { id } } }', {}, key);
    await gql(platform.url, 'mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: data!.apiKeys.nodes[0].id }, key);
    await page.reload();
    await expect.poll(() => page.locator('#account-error').textContent()).not.toBe('');
    expect(await page.locator('#signed-out').isVisible()).toBe(true);
    expect(await page.locator('#workspace').isHidden()).toBe(true);
    expect(await storedEntries(page)).toEqual([]);
  });
});
