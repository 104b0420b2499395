// The Socket.IO peer of the fan-out benchmark (bench/compare.sh): what the gateway's chat socket
// does, in Socket.IO 4 with the Redis adapter, so that both are measured doing the same work.
// A client joins a room (`join`, answered `joined`) and sends `message` {room, content}; every
// socket in the room, the sender's included, on any process, receives `message` with the same
// fields plus a server-assigned id and time, as the gateway's chat frames carry.
//   PORT=9001 REDIS_URL=redis://127.0.0.1:6379 node server.js
// For measurement only: nothing in the product depends on Node.
const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");
const { randomUUID } = require("crypto");

async function main() {
  const pub = createClient({ url: process.env.REDIS_URL || "redis://127.0.0.1:6379" });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const server = http.createServer();
  const io = new Server(server, { adapter: createAdapter(pub, sub), transports: ["websocket"], serveClient: false });
  io.on("connection", (socket) => {
    socket.on("join", (room) => {
      socket.join(String(room));
      socket.emit("joined");
    });
    socket.on("message", (m) => {
      if (!m || typeof m.room !== "string" || !socket.rooms.has(m.room)) return;
      io.to(m.room).emit("message", {
        id: randomUUID(),
        room: m.room,
        sender: socket.id,
        content: String(m.content),
        created_at: new Date().toISOString(),
      });
    });
  });
  const port = Number(process.env.PORT || 9001);
  server.listen(port, "127.0.0.1", () => console.log(`socket.io peer on ${port}`));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
