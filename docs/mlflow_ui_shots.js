// Screenshots of the MLflow UI that need clicks (expand the grid's parent run, open the datasets
// list), with playwright-core driving the system Chromium. Called by docs/mlflow_ui_demo.py:
//   NODE_PATH=<dir with node_modules> node docs/mlflow_ui_shots.js <ui url> <experiment id> <run id> <out dir>
const { chromium } = require('playwright-core');

async function closeAssistant(page) {
  // the MLflow Assistant side panel covers a third of the page
  const close = page.locator('button[aria-label="Close"]').first();
  if (await close.isVisible().catch(() => false)) await close.click();
}

async function expandParent(page, name) {
  // the unlabeled expander button left of the parent run's name
  const rb = await page.getByText(name).first().boundingBox();
  const buttons = page.locator('button');
  for (let i = 0; i < await buttons.count(); i++) {
    const b = await buttons.nth(i).boundingBox().catch(() => null);
    if (b && Math.abs(b.y + b.height / 2 - (rb.y + rb.height / 2)) < 12 && b.x < rb.x && b.x > rb.x - 60) {
      await buttons.nth(i).click();
      return;
    }
  }
  throw new Error(`no expander next to ${name}`);
}

(async () => {
  const [ui, exp, run, out] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking'] });
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const ml = '?workflowType=machine_learning';

  await page.goto(`${ui}/#/experiments/${exp}/runs${ml}`);
  await page.getByText('Expand rows').waitFor({ timeout: 60000 });
  await closeAssistant(page);
  await expandParent(page, 'grid demo');
  await page.waitForTimeout(1500);
  await page.screenshot({ path: `${out}/mlflow-ui-runs.png` });

  await page.goto(`${ui}/#/experiments/${exp}/runs/${run}${ml}`);
  await page.getByText('Datasets').first().waitFor({ timeout: 60000 });
  await page.waitForTimeout(1500);
  await closeAssistant(page);
  await page.screenshot({ path: `${out}/mlflow-ui-run.png` });
  const more = page.getByText(/^\+\d+$/).first();
  if (await more.isVisible().catch(() => false)) {
    await more.click();
    await page.waitForTimeout(1500);
    await page.screenshot({ path: `${out}/mlflow-ui-datasets.png` });
    await page.keyboard.press('Escape');
  }

  await page.goto(`${ui}/#/experiments/${exp}/runs/${run}/system-metrics${ml}`);
  await page.getByText('cpu_utilization_percentage').first().waitFor({ timeout: 60000 });
  await page.waitForTimeout(2000);
  await closeAssistant(page);
  await page.screenshot({ path: `${out}/mlflow-ui-system-metrics.png` });

  await page.goto(`${ui}/#/models/tinyllm-student${ml}`);
  await page.getByText('best-valid').first().waitFor({ timeout: 60000 });
  await closeAssistant(page);
  await page.screenshot({ path: `${out}/mlflow-ui-model.png` });
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
