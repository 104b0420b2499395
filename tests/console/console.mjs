// Drives the gateway console in Debian's headless Chromium (playwright-core, no browser
// download): logs in with the API key, waits for both nodes, follows a chat group, sends a chat
// message from a WebSocket client opened in the page against the *other* node, and waits for it
// in the tail; publishes a test event from the form and waits for that too; then takes a
// screenshot. Run by tests/tests/e2e/console.rs, which starts the nodes and passes:
//   CONSOLE_URL (node 0), API_KEY, CHAT_SOCKET (a chat socket URL on node 1), GROUP, SCREENSHOT.
import { chromium } from "playwright-core";

const { CONSOLE_URL, API_KEY, CHAT_SOCKET, GROUP, SCREENSHOT } = process.env;
const DEADLINE = 30_000;
const step = (what) => console.log(`console: ${what}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.setDefaultTimeout(DEADLINE);
page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
try {
  await page.goto(`${CONSOLE_URL}/console`);
  await page.fill("#key", API_KEY);
  await page.click("#login button[type=submit]");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=nodes] tbody tr").length === 2);
  step("logged in, two nodes listed");

  await page.fill("[data-testid=tail-group]", GROUP);
  await page.click("[data-testid=tail-start]");
  await page.waitForFunction((group) => document.querySelector("[data-testid=tail-state]").dataset.following === group, GROUP);
  step(`following ${GROUP}`);

  const content = `hello from a socket on the other node ${Date.now()}`;
  await page.evaluate(async ({ url, content }) => {
    const ws = new WebSocket(url);
    window.chatSocket = ws; // kept open: the console counts it
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error("socket failed")); });
    ws.send(JSON.stringify({ type: "send_message", data: { content, message_type: "text", parent_message_id: null } }));
  }, { url: CHAT_SOCKET, content });
  await page.waitForFunction((text) => document.querySelector("[data-testid=tail]").textContent.includes(text), content);
  step("the socket's message appeared in the tail");

  await page.fill("[data-testid=publish-group]", GROUP);
  await page.fill("[data-testid=publish-event]", JSON.stringify({ type: "console_test", text: "published from the console" }));
  await page.click("[data-testid=publish]");
  await page.waitForFunction(() => document.querySelector("[data-testid=publish-result]").textContent === "published");
  await page.waitForFunction(() => document.querySelector("[data-testid=tail]").textContent.includes("published from the console"));
  step("the form's event appeared in the tail");

  // The chat socket shows up in its node's row and in the groups, at the next report.
  await page.waitForFunction((group) => document.querySelector("[data-testid=groups]").textContent.includes(group), GROUP);
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  step(`screenshot in ${SCREENSHOT}`);
  console.log("console ok");
} catch (e) {
  console.log(`console failed: ${e.message}`);
  await page.screenshot({ path: `${SCREENSHOT}.failed.png`, fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
