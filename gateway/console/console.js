// The gateway console: polls /api/v1/console/nodes with the API key, follows a group through
// /api/v1/console/tail (a streamed response, one JSON event per line) and publishes through
// /api/v1/publish. No framework, no build step: the gateway serves this file as it is.

const CLOSE_MEANINGS = {
  1001: "idle (no pong)", 1002: "protocol error", 1003: "binary frame", 1007: "invalid data",
  1008: "policy (rate limit)", 1009: "frame too large", 1011: "internal error",
  1012: "node draining", 1013: "slow reader (outbox full)", 4001: "no token",
  4002: "unknown or inactive user", 4003: "bad or expired token", 4004: "not a member",
};
const POLL_MS = 2000;
const TAIL_LINES = 200;

const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem("gatewayKey");
let previous = new Map(); // node -> its previous report, for rates
let tailAbort = null;

function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${key}`, ...(options.headers || {}) };
  return fetch(path, { ...options, headers });
}

function cell(row, text, numeric) {
  const td = row.insertCell();
  td.textContent = text;
  if (numeric) td.className = "num";
  return td;
}

function rate(now, before, field) {
  if (!before || now.at <= before.at) return "–";
  return ((now[field] - before[field]) * 1000 / (now.at - before.at)).toFixed(1);
}

function renderNodes(nodes) {
  $("node-count").textContent = `(${nodes.length})`;
  // What an operator must know (Redis that would lose jobs in a crash), once however many nodes say it.
  const warnings = new Set(nodes.flatMap((n) => n.warnings || []));
  $("warnings").replaceChildren(...[...warnings].map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    return item;
  }));
  const body = $("nodes").tBodies[0];
  body.replaceChildren();
  for (const n of nodes) {
    const row = body.insertRow();
    row.dataset.node = n.node;
    const total = Object.values(n.sockets).reduce((a, b) => a + b, 0);
    const by = Object.entries(n.sockets).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(", ");
    const before = previous.get(n.node);
    cell(row, n.node); cell(row, n.mode); cell(row, total, true); cell(row, by || "–");
    cell(row, n.groups, true); cell(row, rate(n, before, "frames_in"), true);
    cell(row, rate(n, before, "frames_out"), true); cell(row, rate(n, before, "publications_in"), true);
    cell(row, new Date(n.at).toLocaleTimeString());
    previous.set(n.node, n);
  }
}

function renderGroups(nodes) {
  const groups = new Map();
  for (const n of nodes) {
    for (const g of n.largest_groups) {
      const entry = groups.get(g.group) || { sockets: 0, nodes: 0 };
      entry.sockets += g.sockets; entry.nodes += 1;
      groups.set(g.group, entry);
    }
  }
  const body = $("groups").tBodies[0];
  body.replaceChildren();
  for (const [name, g] of [...groups].sort((a, b) => b[1].sockets - a[1].sockets).slice(0, 50)) {
    const row = body.insertRow();
    cell(row, name); cell(row, g.sockets, true); cell(row, g.nodes, true);
    const follow = document.createElement("button");
    follow.type = "button"; follow.textContent = "Follow";
    follow.onclick = () => { $("tail-group").value = name; startTail(); };
    row.insertCell().append(follow);
  }
}

function renderCloses(nodes) {
  const counts = new Map();
  const recent = [];
  for (const n of nodes) {
    for (const [code, count] of Object.entries(n.closes)) counts.set(code, (counts.get(code) || 0) + count);
    for (const c of n.recent_closes) recent.push({ ...c, node: n.node });
  }
  $("close-counts").textContent = [...counts].map(([code, n]) => `${code}: ${n}`).join("  ·  ") || "none yet";
  const body = $("closes").tBodies[0];
  body.replaceChildren();
  for (const c of recent.sort((a, b) => b.at - a.at).slice(0, 30)) {
    const row = body.insertRow();
    cell(row, new Date(c.at).toLocaleTimeString()); cell(row, c.node); cell(row, c.code, true);
    cell(row, CLOSE_MEANINGS[c.code] || "");
  }
}

async function poll() {
  try {
    const response = await api("/api/v1/console/nodes");
    if (response.status === 401) return logout("That key was refused.");
    if (!response.ok) throw new Error(`${response.status} ${(await response.json()).message}`);
    const { nodes } = await response.json();
    renderNodes(nodes); renderGroups(nodes); renderCloses(nodes);
    setStatus(`updated ${new Date().toLocaleTimeString()}`, "ok");
  } catch (e) {
    setStatus(`cannot read the nodes: ${e.message}`, "error");
  }
}

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").className = kind;
}

async function startTail() {
  stopTail();
  const group = $("tail-group").value.trim();
  const controller = new AbortController();
  tailAbort = controller;
  $("tail").replaceChildren();
  $("tail-state").textContent = "connecting…";
  try {
    const response = await api(`/api/v1/console/tail?group=${encodeURIComponent(group)}`, { signal: controller.signal });
    if (!response.ok) {
      $("tail-state").textContent = (await response.json()).message;
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value;
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        showTailLine(line);
      }
    }
    $("tail-state").textContent = "ended";
  } catch (e) {
    if (e.name !== "AbortError") $("tail-state").textContent = `ended: ${e.message}`;
  }
}

function showTailLine(line) {
  const parsed = JSON.parse(line);
  if (parsed.tailing) {
    $("tail-state").textContent = `following ${parsed.tailing}`;
    $("tail-state").dataset.following = parsed.tailing;
    return;
  }
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()}  ${line}`;
  $("tail").prepend(item);
  while ($("tail").children.length > TAIL_LINES) $("tail").lastChild.remove();
}

function stopTail() {
  if (tailAbort) tailAbort.abort();
  tailAbort = null;
  $("tail-state").textContent = "";
  delete $("tail-state").dataset.following;
}

async function publish(event) {
  event.preventDefault();
  let payload;
  try {
    payload = JSON.parse($("publish-event").value);
  } catch (e) {
    $("publish-result").textContent = `not JSON: ${e.message}`;
    return;
  }
  const response = await api("/api/v1/publish", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ group: $("publish-group").value.trim(), event: payload }),
  });
  const answer = await response.json();
  $("publish-result").textContent = response.ok ? "published" : answer.message;
  $("publish-result").className = response.ok ? "ok" : "error";
}

let timer = null;
function start() {
  $("login").hidden = true; $("app").hidden = false; $("logout").hidden = false;
  poll();
  timer = setInterval(poll, POLL_MS);
}

function logout(message) {
  sessionStorage.removeItem("gatewayKey");
  key = null;
  clearInterval(timer);
  stopTail();
  $("login").hidden = false; $("app").hidden = true; $("logout").hidden = true;
  setStatus(message || "", "error");
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key").value;
  sessionStorage.setItem("gatewayKey", key);
  start();
});
$("logout").addEventListener("click", () => logout());
$("tail-form").addEventListener("submit", (event) => { event.preventDefault(); startTail(); });
$("tail-stop").addEventListener("click", stopTail);
$("publish-form").addEventListener("submit", publish);
if (key) start();
