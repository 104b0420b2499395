-- Where each chat message stands in its chat's group: the epoch and seq of its publication. A
-- client resuming past the group's window is sent the messages it missed from here.
ALTER TABLE chat_messages ADD COLUMN group_epoch INTEGER;
ALTER TABLE chat_messages ADD COLUMN group_seq INTEGER;
CREATE INDEX IF NOT EXISTS chat_messages_by_position
    ON chat_messages (chat_id, group_epoch, group_seq) WHERE group_seq IS NOT NULL;
