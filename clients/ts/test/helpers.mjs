// What the SDK's tests share: the cluster the Rust test started (tests/tests/e2e/sdk.rs passes it
// in the environment), tokens minted with its secret, the server API, and a WebSocket class that
// counts its sockets.
import { createHmac } from "node:crypto";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

/** The SDK under test: the package as a user installs it, when tests/tests/e2e/sdk.rs packed
 * it and installed the tarball (`SDK_ENTRY`, a module that re-exports `@rtgate/client` resolved
 * from there, `SDK_FILE` its built file); else this folder's own build. */
export const sdkFile = process.env.SDK_FILE || fileURLToPath(new URL("../dist/index.js", import.meta.url));
export const { RealtimeClient } = await import(process.env.SDK_ENTRY || new URL("../dist/index.js", import.meta.url).href);

export const env = {
  urls: process.env.SOCKET_URLS.split(" "),
  api: process.env.API_URL,
  key: process.env.API_KEY,
  secret: process.env.JWT_SECRET,
  chat: process.env.CHAT_ID,
  channels: process.env.CHANNEL_IDS.split(" "),
  user: process.env.USER_ID,
  killPid: Number(process.env.KILL_PID),
};

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** An HS256 JWT for `user`, valid `seconds`. */
export function mint(user, seconds) {
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: user, iat: now, exp: now + seconds })}`;
  return `${head}.${createHmac("sha256", env.secret).update(head).digest("base64url")}`;
}

/** Publishes `event` through the server API to the chat (or to `group`). */
export async function publish(event, group = `chat:${env.chat}`) {
  const response = await fetch(`${env.api}/api/v1/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${env.key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ group, event }),
  });
  if (response.status !== 202) throw new Error(`publish answered ${response.status}`);
}

export async function history() {
  const response = await fetch(`${env.api}/api/v1/chats/${env.chat}/messages?limit=200`, {
    headers: { Authorization: `Bearer ${env.key}` },
  });
  return (await response.json()).messages;
}

/** `ws`, counting the sockets open at once and keeping the last one made. */
export function countingWebSocket() {
  const stats = { made: 0, open: 0, mostOpen: 0, last: null };
  class Counting extends WebSocket {
    constructor(...args) {
      super(...args);
      stats.made += 1;
      stats.last = this;
      this.addEventListener("open", () => { stats.open += 1; stats.mostOpen = Math.max(stats.mostOpen, stats.open); });
      this.addEventListener("close", () => { stats.open -= 1; });
    }
  }
  return { Counting, stats };
}

/** Waits for `check()` to hold (a deadline, not a timing assertion). */
export async function until(what, check, deadlineMs = 30_000) {
  const end = Date.now() + deadlineMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
