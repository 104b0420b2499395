// The same SDK in Debian's headless Chromium (playwright-core, no browser download): the browser's
// own WebSocket, the token in the subprotocol, and a resume after the socket drops.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { chromium } from "playwright-core";
import { env, mint, publish, sdkFile, until } from "./helpers.mjs";

test("in Chromium: every message once, in order, across a dropped socket", async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // The page is served by the test (route interception), which the browser treats as a public
    // address: its checks on pages reaching local addresses are off for this test only.
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-features=LocalNetworkAccessChecks"],
  });
  try {
    const page = await browser.newPage();
    const sdk = readFileSync(sdkFile);
    page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
    page.on("console", (m) => console.log(`page: ${m.text()}`));
    // The page and the SDK are served by the test itself, from the node's own origin (a page from
    // elsewhere would need the browser's permission to reach a local address).
    await page.route(`${env.api}/sdk-test/**`, (route) => {
      const path = new URL(route.request().url()).pathname;
      if (path === "/sdk-test/index.js") return route.fulfill({ body: sdk, contentType: "text/javascript" });
      return route.fulfill({ body: "<!doctype html><title>sdk</title>", contentType: "text/html" });
    });
    await page.goto(`${env.api}/sdk-test/`);
    const url = `${env.urls[1]}/api/v1/ws/chat/${env.chat}`;
    await page.evaluate(async ({ url, token }) => {
      const { RealtimeClient } = await import("/sdk-test/index.js");
      window.sockets = [];
      class Kept extends WebSocket {
        constructor(...args) { super(...args); window.sockets.push(this); }
      }
      window.received = [];
      window.opened = 0;
      const client = new RealtimeClient({ urls: [url], token: () => token, WebSocket: Kept, backoffBaseMs: 50 });
      client.on("frame", (f) => { if (f.type === "numbered") window.received.push(f.n); });
      client.on("open", () => { window.opened += 1; });
      client.on("close", (c) => console.log(`closed ${c.code} ${c.reason}`));
      client.connect();
    }, { url, token: mint(env.user, 3600) });
    const count = (expr) => page.evaluate(expr);
    await until("open in the browser", async () => (await count("window.opened")) === 1);
    for (let n = 0; n < 20; n++) await publish({ type: "numbered", n });
    await until("20 received", async () => (await count("window.received.length")) >= 20);
    await page.evaluate(() => window.sockets.at(-1).close()); // the connection drops
    for (let n = 20; n < 40; n++) await publish({ type: "numbered", n });
    await until("40 received", async () => (await count("window.received.length")) >= 40);
    assert.deepEqual(await count("window.received"), [...Array(40).keys()]);
    assert.ok((await count("window.opened")) >= 2, "it reconnected");
  } finally {
    await browser.close();
  }
});
