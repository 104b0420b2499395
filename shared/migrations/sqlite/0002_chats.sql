-- Chats (chat.txt): members, messages (with threads and direct messages), read receipts.
CREATE TABLE IF NOT EXISTS chats (
    id              TEXT PRIMARY KEY,
    last_message_at TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS chat_members (
    chat_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);

CREATE TABLE IF NOT EXISTS chat_messages (
    id                TEXT PRIMARY KEY,
    chat_id           TEXT NOT NULL,
    sender_id         TEXT NOT NULL,
    recipient_id      TEXT,
    content           TEXT NOT NULL,
    message_type      TEXT NOT NULL,
    parent_message_id TEXT,
    created_at        TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS chat_messages_by_chat ON chat_messages (chat_id, created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS read_receipts (
    message_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    chat_id    TEXT NOT NULL,
    read_at    TEXT NOT NULL,
    PRIMARY KEY (message_id, user_id)
);
