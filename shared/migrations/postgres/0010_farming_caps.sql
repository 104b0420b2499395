-- Message points are capped per user per window (the rules' `message_points_cap`): the window a
-- user's message points were last counted in (its start, Unix seconds) and the points counted
-- in it.
ALTER TABLE user_stats ADD COLUMN IF NOT EXISTS message_window_start BIGINT NOT NULL DEFAULT 0;
ALTER TABLE user_stats ADD COLUMN IF NOT EXISTS message_window_points BIGINT NOT NULL DEFAULT 0;
-- How long a focus session's timer has run (pauses excluded): a completion counts only after the
-- rules' `focus_min_seconds`.
ALTER TABLE focus_sessions ADD COLUMN IF NOT EXISTS ran_seconds BIGINT NOT NULL DEFAULT 0;
