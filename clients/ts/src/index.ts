// A client for the gateway's sockets (docs/reconnect.md): one socket at a time whatever the
// timing, reconnects with exponential backoff and full jitter (or the server's retry hint),
// resumes with `?since=` (or, on a socket of several groups such as Pythia's `/ws`, with the
// `resume` token its frames carry) so that nothing is missed or shown twice, passes its token in the
// subprotocol and refreshes it before it expires, and puts a `client_message_id` on every message
// it sends, resending what may not have gone out after a reconnect (the gateway answers a resend
// as the first send, so nothing is stored twice).

/// Frames of the five apps, as the guides describe them; `seq` is added by the gateway.
export type Frame =
  | SessionMessage | SessionTyping
  | ChatNewMessage | ChatTyping | ChatDirectMessage
  | PythiaNewMessage | PythiaUserStatus
  | OneTaskNotification | OneTaskTaskUpdate | OneTaskFocus
  | ResyncRequired | ErrorFrame
  | { type: string; seq?: number; [field: string]: unknown };

interface Numbered { seq?: number; resume?: string }
export interface SessionMessage extends Numbered { type: "message"; message_id: string; content: string; sender_id: string; sender_name: string; created_at: string }
export interface SessionTyping extends Numbered { type: "typing"; is_typing: boolean; sender_id: string; sender_name: string }
export interface ChatMessageData { id: string; chat_id: string; sender_id: string; content: string; message_type: string; parent_message_id: string | null; created_at: string; updated_at: string; sender: Record<string, unknown> }
export interface ChatNewMessage extends Numbered { type: "new_message"; data: ChatMessageData }
export interface ChatTyping extends Numbered { type: "typing_indicator"; data: { user_id: string; is_typing: boolean } }
export interface ChatDirectMessage extends Numbered { type: "direct_message"; data: ChatMessageData & { recipient_id: string } }
export interface PythiaNewMessage extends Numbered { type: "new_message"; data: { id: string; content: string; channelId: string; userId: string; createdAt: string } }
export interface PythiaUserStatus extends Numbered { type: "user_status"; user_id: string; status: "online" | "offline" }
export interface OneTaskNotification extends Numbered { type: "notification"; notification_id: number; title: string; content: string; notification_type: string }
export interface OneTaskTaskUpdate extends Numbered { type: "task_update"; task_id: string | number; action: string; title: string }
export interface OneTaskFocus extends Numbered { type: "focus_session_update" | "focus_session_state"; [field: string]: unknown }
/** The gap since `since` cannot be filled: refetch history, then go on from `seq`. */
export interface ResyncRequired { type: "resync_required"; group: string; seq: number | null }
export interface ErrorFrame { type: "error"; error_code: string; message: string }

/** A WebSocket class: the browser's, or `ws` in Node. */
export type WebSocketClass = new (url: string, protocols?: string | string[]) => WebSocket;

export interface ClientOptions {
  /** Socket URLs without a token (several: tried in turn, e.g. two nodes or one balancer). */
  urls: string[];
  /** Gives a valid JWT; called to connect and, before the token expires, to refresh it. */
  token: () => string | Promise<string>;
  WebSocket?: WebSocketClass;
  /** Backoff base and cap, ms (defaults 250 and 30000). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Refresh this long before the token's `exp` (default 60000). */
  refreshBeforeMs?: number;
  /** Sends kept while disconnected (default 100; the oldest go first). */
  queueLimit?: number;
  /** How long a sent message is resent after a reconnect, unconfirmed (default 60000). */
  resendWithinMs?: number;
}

type Listener<T> = (value: T) => void;
interface Events { frame: Frame; open: void; close: { code: number; reason: string }; resync: ResyncRequired }
interface Sent { id: string; frame: Record<string, unknown>; at: number }

const MESSAGE_TYPES = new Set(["message", "send_message", "direct_message"]);
const SEEN_IDS = 2048;

export class RealtimeClient {
  /** The last `seq` delivered: where the next connection resumes. */
  lastSeq: number | undefined;
  /** The last resume token (a socket of several groups): where the next connection resumes. */
  lastResume: string | undefined;
  private socket: WebSocket | null = null;
  private attempt = 0;
  private urlIndex = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private closedByUser = false;
  /** Between deciding to open and having a socket (the token may take a while). */
  private opening = false;
  private hintMs: number | null = null;
  private queue: Record<string, unknown>[] = [];
  private sent: Sent[] = [];
  private seenIds = new Set<string>();
  private listeners: { [K in keyof Events]?: Listener<Events[K]>[] } = {};
  private readonly options: Required<Omit<ClientOptions, "WebSocket">> & { WebSocket: WebSocketClass };

  constructor(options: ClientOptions) {
    const WebSocketImpl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketClass }).WebSocket;
    if (!WebSocketImpl) throw new Error("no WebSocket: pass the `ws` package as options.WebSocket");
    this.options = {
      backoffBaseMs: 250, backoffMaxMs: 30_000, refreshBeforeMs: 60_000, queueLimit: 100, resendWithinMs: 60_000,
      ...options, WebSocket: WebSocketImpl,
    };
  }

  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    (this.listeners[event] ??= [] as never[]).push(listener as never);
    return this;
  }

  private emit<K extends keyof Events>(event: K, value: Events[K]) {
    for (const listener of this.listeners[event] ?? []) (listener as Listener<Events[K]>)(value);
  }

  /** Opens the socket (once: calling it again while connected or connecting does nothing). */
  connect(): void {
    this.closedByUser = false;
    if (this.socket || this.timer || this.opening) return;
    void this.open();
  }

  /** Closes for good: no reconnect. */
  close(): void {
    this.closedByUser = true;
    this.clearTimers();
    this.socket?.close(1000);
    this.socket = null;
  }

  /**
   * Sends a frame. A message (`message`, `send_message`, `direct_message`) gets a
   * `client_message_id` (returned), and is kept to be resent after a reconnect; while
   * disconnected, frames wait in a small queue.
   */
  send(frame: Record<string, unknown>): string | undefined {
    let id: string | undefined;
    if (MESSAGE_TYPES.has(String(frame.type))) {
      id = (globalThis.crypto as Crypto).randomUUID();
      const data = frame.data as Record<string, unknown> | undefined;
      frame = data && typeof data === "object" ? { ...frame, data: { ...data, client_message_id: id } } : { ...frame, client_message_id: id };
      this.sent.push({ id, frame, at: Date.now() });
    }
    if (this.socket?.readyState === 1) {
      this.socket.send(JSON.stringify(frame));
    } else if (!id) {
      this.queue.push(frame);
      if (this.queue.length > this.options.queueLimit) this.queue.shift();
    }
    return id;
  }

  private async open() {
    this.opening = true;
    let token: string;
    try {
      token = await this.options.token();
    } catch {
      this.opening = false;
      return this.retry();
    }
    this.opening = false;
    if (this.closedByUser || this.socket) return;
    const url = new URL(this.options.urls[this.urlIndex % this.options.urls.length]);
    // A socket of one group ignores `resume`, one of several `since`; an empty `resume` asks for tokens.
    if (this.lastSeq !== undefined) url.searchParams.set("since", String(this.lastSeq));
    url.searchParams.set("resume", this.lastResume ?? "");
    const socket = new this.options.WebSocket(url.toString(), ["bearer", token]);
    this.socket = socket;
    socket.onopen = () => {
      if (this.socket !== socket) return;
      this.attempt = 0;
      this.scheduleRefresh(token);
      this.emit("open", undefined);
      this.flush();
    };
    socket.onmessage = (event: MessageEvent) => {
      if (this.socket === socket) this.receive(String(event.data));
    };
    socket.onclose = (event: CloseEvent) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.clearTimers();
      this.emit("close", { code: event.code, reason: event.reason });
      this.hintMs = retryHint(event.reason);
      if ([4001, 4002, 4004].includes(event.code)) return; // refused for good: do not hammer
      if (!this.closedByUser) this.retry();
    };
    socket.onerror = () => {
      /* onclose follows */
    };
  }

  private retry() {
    if (this.closedByUser || this.timer) return;
    this.urlIndex += 1;
    const ceiling = Math.min(this.options.backoffMaxMs, this.options.backoffBaseMs * 2 ** this.attempt);
    const delay = this.hintMs ?? Math.random() * ceiling; // full jitter, unless the server said when
    this.hintMs = null;
    this.attempt += 1;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.open();
    }, delay);
  }

  private flush() {
    const socket = this.socket;
    if (!socket) return;
    // Messages that may not have gone out: resent with their id (the gateway answers a resend
    // as the first send and stores it once).
    const since = Date.now() - this.options.resendWithinMs;
    this.sent = this.sent.filter((s) => s.at >= since);
    for (const s of this.sent) socket.send(JSON.stringify(s.frame));
    for (const frame of this.queue.splice(0)) socket.send(JSON.stringify(frame));
  }

  private receive(text: string) {
    let frame: Frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.type === "resync_required") {
      const resync = frame as ResyncRequired;
      if (typeof resync.seq === "number") this.lastSeq = resync.seq;
      this.emit("resync", resync);
      return;
    }
    if (frame.type === "token_refreshed") return;
    const { seq, resume } = frame as Numbered;
    if (typeof resume === "string") {
      // Several groups, whose numbers do not compare: the server resumes each exactly.
      this.lastResume = resume;
    } else if (typeof seq === "number") {
      if (this.lastSeq !== undefined && seq <= this.lastSeq) return; // seen before
      this.lastSeq = seq;
    }
    // A resend's answer repeats the first send: shown once.
    const id = messageId(frame);
    if (id) {
      if (this.seenIds.has(id)) return;
      this.seenIds.add(id);
      if (this.seenIds.size > SEEN_IDS) this.seenIds.delete(this.seenIds.values().next().value as string);
    }
    this.emit("frame", frame);
  }

  private scheduleRefresh(token: string) {
    const exp = expiry(token);
    if (exp === undefined) return;
    const wait = Math.max(0, exp * 1000 - Date.now() - this.options.refreshBeforeMs);
    this.refreshTimer = setTimeout(async () => {
      try {
        const fresh = await this.options.token();
        if (this.socket?.readyState === 1) {
          this.socket.send(JSON.stringify({ type: "refresh_token", token: fresh }));
          this.scheduleRefresh(fresh);
        }
      } catch {
        /* the socket closes with 4003 at exp, and the reconnect asks for a token again */
      }
    }, wait);
  }

  private clearTimers() {
    if (this.timer) clearTimeout(this.timer);
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.timer = null;
    this.refreshTimer = null;
  }
}

/** `retry_after_ms=N` in a 1012 or 1013 close reason. */
export function retryHint(reason: string): number | null {
  const match = /retry_after_ms=(\d+)/.exec(reason ?? "");
  return match ? Number(match[1]) : null;
}

/** The id of the message a frame carries, if it carries one. */
function messageId(frame: Frame): string | undefined {
  const f = frame as { message_id?: unknown; data?: { id?: unknown } };
  if (typeof f.message_id === "string") return f.message_id;
  if (f.data && typeof f.data.id === "string") return f.data.id;
  return undefined;
}

/** A JWT's `exp` (seconds), read without verifying (the server verifies). */
function expiry(token: string): number | undefined {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(payload)).exp;
    return typeof exp === "number" ? exp : undefined;
  } catch {
    return undefined;
  }
}
