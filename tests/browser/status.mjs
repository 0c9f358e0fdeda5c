// Drives veer's status page in a real browser (Debian's chromium through playwright-core)
// for tests/status_page.rs. One JSON command per stdin line, one JSON answer per stdout line:
//   {"op":"open","url":U}                        open the page, wait for its first picture
//   {"op":"wait","servers":{id:state},"shares":{group:share},"timeout_ms":N}
//                                                wait until the DOM shows them (no reload)
//   {"op":"token","value":T}                      type the admin token
//   {"op":"click","action":LINE}                  click the button that runs LINE, await its answer
//   {"op":"split","backend":B,"weights":{group:w}} set the split through the page's editor
//   {"op":"fetch","line":LINE,"headers":{…}}      POST /command from the page's script
//   {"op":"live","value":"on"|"off"}             wait until the page is live / reconnecting
//   {"op":"sleep","ms":N}                         let the page run (screenshots)
//   {"op":"screenshot","path":P}                  save a PNG of the whole page
//   {"op":"quit"}
// Every answer carries the page's DOM reading: rows (data-server/state/health), shares,
// which buttons exist, and `loaded`, the page's load time (unchanged = never reloaded).
import { chromium } from "playwright-core";
import readline from "node:readline";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
let navigations = 0;
page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations++; });

const reading = () => page.evaluate(() => ({
  loaded: window.veer && window.veer.loaded,
  snapshots: window.veer && window.veer.snapshots,
  live: document.getElementById("live").className,
  rows: [...document.querySelectorAll("tr[data-server]")].map((r) => ({
    server: r.dataset.server, state: r.dataset.state, health: r.dataset.health,
    stateWord: r.querySelector(".state").textContent, colour: getComputedStyle(r.querySelector("td.st")).backgroundColor,
  })),
  shares: Object.fromEntries([...document.querySelectorAll(".bar div[data-group]")].map((d) => [d.dataset.group, Number(d.dataset.share)])),
  buttons: [...document.querySelectorAll("button[data-action]")].map((b) => b.dataset.action),
  rollouts: [...document.querySelectorAll("[data-rollout]")].map((d) => ({ backend: d.dataset.rollout, phase: d.querySelector(".phase").textContent, text: d.textContent.replace(/\s+/g, " ").trim() })),
  readonly: !document.getElementById("readonly").hidden,
  result: document.getElementById("result").textContent,
}));

async function handle(cmd) {
  switch (cmd.op) {
    case "open":
      await page.goto(cmd.url);
      await page.waitForFunction(() => window.veer && window.veer.snapshots > 0, null, { timeout: 15000 });
      return {};
    case "wait": {
      const started = Date.now();
      await page.waitForFunction(({ servers, shares }) => {
        for (const [id, state] of Object.entries(servers || {})) {
          const row = document.querySelector(`tr[data-server="${id}"]`);
          if (!row || row.dataset.state !== state) return false;
        }
        for (const [group, share] of Object.entries(shares || {})) {
          const seg = document.querySelector(`.bar div[data-group="${group}"]`);
          if ((seg ? Number(seg.dataset.share) : 0) !== share) return false;
        }
        return true;
      }, { servers: cmd.servers, shares: cmd.shares }, { timeout: cmd.timeout_ms || 2000, polling: 20 });
      return { waited_ms: Date.now() - started };
    }
    case "token":
      await page.fill("#token", cmd.value);
      await page.dispatchEvent("#token", "change");
      return {};
    case "click": {
      await page.click(`button[data-action="${cmd.action}"]`);
      await page.waitForFunction(() => !document.getElementById("result").textContent.endsWith("…"), null, { timeout: 10000 });
      return { class: await page.getAttribute("#result", "class") };
    }
    case "split": {
      // The split editor: open it from the backend's button, type the weights, apply.
      await page.click(`button[data-split="${cmd.backend}"]`);
      for (const [group, weight] of Object.entries(cmd.weights)) {
        await page.fill(`#editor-groups input[data-group="${group}"]`, String(weight));
      }
      await page.click("#editor-apply");
      await page.waitForFunction(() => !document.getElementById("result").textContent.endsWith("…"), null, { timeout: 10000 });
      return { class: await page.getAttribute("#result", "class") };
    }
    case "fetch":
      // A request the page's own script makes: what a page (or a script injected into one)
      // can send to /command.
      return await page.evaluate(async ({ line, headers }) => {
        const r = await fetch("command", { method: "POST", headers, body: line });
        return { status: r.status, text: await r.text() };
      }, { line: cmd.line, headers: cmd.headers || {} });
    case "live":
      // Waits until the page says it is live ("on") or reconnecting ("off").
      await page.waitForFunction((w) => document.getElementById("live").className === w, cmd.value, { timeout: 15000 });
      return {};
    case "sleep":
      await page.waitForTimeout(cmd.ms);
      return {};
    case "screenshot":
      await page.screenshot({ path: cmd.path, fullPage: true });
      return {};
    case "quit":
      await browser.close();
      process.exit(0);
    default:
      throw new Error("unknown op " + cmd.op);
  }
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  let answer;
  try {
    const cmd = JSON.parse(line);
    const extra = await handle(cmd);
    answer = { ok: true, ...extra, dom: await reading(), navigations };
  } catch (e) {
    let dom = null;
    try { dom = await reading(); } catch (_) { /* page gone */ }
    answer = { ok: false, error: String(e && e.message || e), dom, navigations };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
await browser.close();
