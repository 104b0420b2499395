// The TypeScript SDK against real gateway nodes (started by tests/tests/e2e/sdk.rs).
import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { countingWebSocket, env, history, mint, publish, RealtimeClient, until } from "./helpers.mjs";

const chatUrls = env.urls.map((u) => `${u}/api/v1/ws/chat/${env.chat}`);

test("connect() however often makes one socket", async () => {
  const { Counting, stats } = countingWebSocket();
  const client = new RealtimeClient({ urls: chatUrls.slice(1), token: async () => mint(env.user, 3600), WebSocket: Counting });
  for (let i = 0; i < 5; i++) client.connect();
  await until("the socket opens", () => stats.open === 1);
  client.connect();
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(stats.made, 1);
  assert.equal(stats.mostOpen, 1);
  client.close();
});

test("a resend after a dropped socket is stored once", async () => {
  const { Counting, stats } = countingWebSocket();
  const client = new RealtimeClient({ urls: chatUrls.slice(1), token: async () => mint(env.user, 3600), WebSocket: Counting, backoffBaseMs: 50 });
  const seen = [];
  client.on("frame", (f) => seen.push(f));
  client.connect();
  await until("open", () => stats.open === 1);
  const content = `sent once ${Date.now()}`;
  const id = client.send({ type: "send_message", data: { content, message_type: "text" } });
  assert.match(id, /^[0-9a-f-]{36}$/);
  stats.last.terminate(); // the connection drops under the send
  await until("a second socket", () => stats.made === 2 && stats.open === 1);
  const after = `after ${Date.now()}`;
  client.send({ type: "send_message", data: { content: after, message_type: "text" } });
  await until("both stored", async () => (await history()).some((m) => m.content === after));
  const stored = (await history()).filter((m) => m.content === content);
  assert.equal(stored.length, 1, "one message stored");
  assert.equal(seen.filter((f) => f.data?.content === content).length, 1, "shown once");
  client.close();
});

test("a refreshed token keeps the socket past the first one's expiry", async () => {
  const { Counting, stats } = countingWebSocket();
  let calls = 0;
  const token = async () => mint(env.user, ++calls === 1 ? 3 : 3600);
  const client = new RealtimeClient({ urls: chatUrls.slice(1), token, WebSocket: Counting, refreshBeforeMs: 2000 });
  const closes = [];
  client.on("close", (c) => closes.push(c));
  const seen = [];
  client.on("frame", (f) => seen.push(f));
  client.connect();
  await until("open", () => stats.open === 1);
  await new Promise((r) => setTimeout(r, 4000)); // past the first token's exp
  await publish({ type: "after_expiry" });
  await until("the publication", () => seen.some((f) => f.type === "after_expiry"));
  assert.equal(closes.length, 0, "never closed");
  assert.equal(stats.made, 1);
  client.close();
});

test("a Pythia client resumes each of its channels across a dropped socket, on the other node", async () => {
  const { Counting, stats } = countingWebSocket();
  const urls = env.urls.map((u) => `${u}/ws`);
  const client = new RealtimeClient({ urls, token: async () => mint(env.user, 3600), WebSocket: Counting, backoffBaseMs: 50 });
  const seen = Object.fromEntries(env.channels.map((c) => [c, []]));
  client.on("frame", (f) => { if (f.type === "new_message") seen[f.data.channelId].push(f.data.content); });
  const post = (n) => {
    const channel = env.channels[n % 2];
    return publish({ type: "new_message", data: { channelId: channel, content: `m${n}` } }, `channel:${channel}`);
  };
  client.connect();
  await until("open", () => stats.open === 1);
  await post(0);
  await until("the first message", () => seen[env.channels[0]].length === 1);
  assert.ok(client.lastResume, "its frames carry a resume token");
  stats.last.terminate(); // dropped; messages go on meanwhile and after it is back
  for (let n = 1; n <= 40; n++) await post(n);
  await until("every message", () => seen[env.channels[0]].length + seen[env.channels[1]].length >= 41);
  await new Promise((r) => setTimeout(r, 200)); // a late duplicate would show here
  const range = (from) => [...Array(21).keys()].map((i) => from + 2 * i).filter((n) => n <= 40).map((n) => `m${n}`);
  assert.deepEqual(seen[env.channels[0]], range(0), "each once, in order");
  assert.deepEqual(seen[env.channels[1]], range(1), "each once, in order");
  assert.ok(stats.made >= 2, "it reconnected");
  client.close();
});

test("through a node SIGKILL mid-stream every message arrives once, in order", async () => {
  const client = new RealtimeClient({ urls: chatUrls, token: async () => mint(env.user, 3600), WebSocket, backoffBaseMs: 100, backoffMaxMs: 1000 });
  const received = [];
  client.on("frame", (f) => { if (f.type === "numbered") received.push(f.n); });
  let opened = 0;
  client.on("open", () => { opened += 1; });
  client.connect();
  await until("open on the node that will die", () => opened === 1);
  const total = 300;
  for (let n = 0; n < total; n++) {
    await publish({ type: "numbered", n });
    if (n === 100) {
      await until("100 received", () => received.length >= 100);
      process.kill(env.killPid, "SIGKILL");
    }
  }
  await until("all received", () => received.length >= total, 60_000);
  assert.deepEqual(received, [...Array(total).keys()]);
  assert.ok(opened >= 2, "it reconnected");
  client.close();
});
