//! Gamification: the rules (a JSON file, `WORKER_RULES`, with a compiled-in default) and the pure
//! engine `apply(rules, stats, activity, at) -> (stats, awards)`. No I/O here: the worker loads
//! stats, applies activities in order, and stores stats and awards in one transaction.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The rules that ship with the worker.
pub const DEFAULT_RULES: &str = include_str!("../rules/default.json");

pub use shared::jobs::ActivityKind;
pub use shared::store::UserStats as Stats;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Points {
    pub message: i64,
    pub task_completed: i64,
    pub focus_completed: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Achievement {
    /// Stable integer id: `achievement_id` and `related_entity_id` in events.
    pub id: i64,
    /// Stable name for code: `key` in the event's `data`.
    pub key: String,
    pub name: String,
    pub description: String,
    pub icon: String,
    /// Points earned on unlocking (they count toward the level).
    pub points: i64,
    /// How many activities of `activity` unlock it.
    pub threshold: i64,
    pub activity: ActivityKind,
}

/// At most `points` message points per user per `window_seconds` (windows aligned to the Unix
/// epoch): a thousand messages in a minute earn what a busy honest hour does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PointsCap {
    pub points: i64,
    pub window_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Rules {
    pub points: Points,
    /// No cap when absent.
    #[serde(default)]
    pub message_points_cap: Option<PointsCap>,
    /// A completed focus session counts (points, streak, achievements) only once its timer ran
    /// this long, pauses excluded; 0 (or absent): any completion counts.
    #[serde(default)]
    pub focus_min_seconds: i64,
    /// level = 1 + points / points_per_level
    pub points_per_level: i64,
    pub streak_milestones: Vec<i64>,
    pub achievements: Vec<Achievement>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read the rules file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid rules: {0}")]
    Invalid(String),
}

impl Rules {
    pub fn parse(json: &str) -> Result<Self, RulesError> {
        let rules: Rules = serde_json::from_str(json).map_err(|e| RulesError::Invalid(e.to_string()))?;
        if rules.points_per_level <= 0 {
            return Err(RulesError::Invalid("points_per_level must be positive".into()));
        }
        if rules.message_points_cap.as_ref().is_some_and(|cap| cap.points < 0 || cap.window_seconds <= 0) {
            return Err(RulesError::Invalid("message_points_cap: points at least 0, window_seconds positive".into()));
        }
        let mut ids = BTreeSet::new();
        for a in &rules.achievements {
            if a.threshold <= 0 || !ids.insert(a.id) {
                return Err(RulesError::Invalid(format!(
                    "achievement {}: ids must be unique, thresholds positive",
                    a.id
                )));
            }
        }
        Ok(rules)
    }

    /// `WORKER_RULES` if set, else the default.
    pub fn load(path: Option<&str>) -> Result<Self, RulesError> {
        match path {
            None => Self::parse(DEFAULT_RULES),
            Some(path) => {
                let json =
                    std::fs::read_to_string(path).map_err(|source| RulesError::Read { path: path.into(), source })?;
                Self::parse(&json)
            }
        }
    }

    pub fn default_set() -> Self {
        Self::parse(DEFAULT_RULES).expect("the default rules are valid")
    }

    fn points_for(&self, kind: ActivityKind) -> i64 {
        match kind {
            ActivityKind::Message => self.points.message,
            ActivityKind::TaskCompleted => self.points.task_completed,
            ActivityKind::FocusCompleted => self.points.focus_completed,
        }
    }

    /// Whether an activity counts at all: a focus session completed before the rules' minimum
    /// does not (started and completed back to back, it earns nothing).
    pub fn counts(&self, activity: ActivityKind, ran_seconds: Option<i64>) -> bool {
        match activity {
            ActivityKind::FocusCompleted => ran_seconds.unwrap_or(0) >= self.focus_min_seconds,
            _ => true,
        }
    }

    pub fn level_of(&self, points: i64) -> i64 {
        1 + points.max(0) / self.points_per_level
    }
}

fn count_mut(stats: &mut Stats, kind: ActivityKind) -> &mut i64 {
    match kind {
        ActivityKind::Message => &mut stats.messages,
        ActivityKind::TaskCompleted => &mut stats.tasks_completed,
        ActivityKind::FocusCompleted => &mut stats.focus_completed,
    }
}

/// What an activity earned, in the order the user hears of it.
#[derive(Debug, Clone, PartialEq)]
pub enum Award {
    /// First activity of a UTC day.
    Streak {
        current_streak: i64,
        is_milestone: bool,
    },
    Unlocked {
        achievement: Achievement,
        level: i64,
    },
    /// The count crossed half the threshold.
    Progress {
        achievement: Achievement,
    },
    LevelUp {
        new_level: i64,
    },
}

/// Applies one activity at `at` to `stats`. Pure: same inputs, same outputs.
pub fn apply(rules: &Rules, stats: &Stats, kind: ActivityKind, at: DateTime<Utc>) -> (Stats, Vec<Award>) {
    let mut next = stats.clone();
    if next.level < 1 {
        next.level = rules.level_of(next.points);
    }
    let mut awards = Vec::new();

    let today = at.date_naive();
    let continues = match next.last_active_day {
        // The same day, or an activity older than the last active day (a redelivered or
        // late job): it still counts, but the streak never moves backwards.
        Some(day) if day >= today => None,
        Some(day) if day.succ_opt() == Some(today) => Some(next.current_streak + 1),
        // First activity ever, or a gap: a new streak.
        _ => Some(1),
    };
    if let Some(streak) = continues {
        next.current_streak = streak;
        next.longest_streak = next.longest_streak.max(streak);
        next.last_active_day = Some(today);
        let is_milestone = streak > 1 && rules.streak_milestones.contains(&streak);
        awards.push(Award::Streak { current_streak: streak, is_milestone });
    }

    let before = *count_mut(&mut next, kind);
    let after = before + 1;
    *count_mut(&mut next, kind) = after;
    let mut earned = rules.points_for(kind);
    if let (ActivityKind::Message, Some(cap)) = (kind, &rules.message_points_cap) {
        let window = at.timestamp().div_euclid(cap.window_seconds) * cap.window_seconds;
        // A late message from an earlier window counts against the current one.
        if window > next.message_window_start {
            next.message_window_start = window;
            next.message_window_points = 0;
        }
        earned = earned.min(cap.points - next.message_window_points).max(0);
        next.message_window_points += earned;
    }
    next.points += earned;

    let mut unlocked = Vec::new();
    for achievement in rules.achievements.iter().filter(|a| a.activity == kind) {
        if next.unlocked.contains(&achievement.id) {
            continue;
        }
        if after >= achievement.threshold {
            next.unlocked.insert(achievement.id);
            next.points += achievement.points;
            unlocked.push(achievement.clone());
        } else if before * 2 < achievement.threshold && after * 2 >= achievement.threshold {
            awards.push(Award::Progress { achievement: achievement.clone() });
        }
    }
    let new_level = rules.level_of(next.points);
    for achievement in unlocked {
        awards.push(Award::Unlocked { achievement, level: new_level });
    }
    if new_level > next.level {
        awards.push(Award::LevelUp { new_level });
    }
    next.level = new_level.max(next.level);
    (next, awards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32, hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(2026, 3, day, hour, minute, second).unwrap()
    }

    fn rules() -> Rules {
        Rules::default_set()
    }

    fn streaks(awards: &[Award]) -> Vec<(i64, bool)> {
        awards
            .iter()
            .filter_map(|a| match a {
                Award::Streak { current_streak, is_milestone } => Some((*current_streak, *is_milestone)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_first_activity_starts_a_streak_of_one_that_is_no_milestone() {
        let (stats, awards) = apply(&rules(), &Stats::default(), ActivityKind::TaskCompleted, at(1, 12, 0, 0));
        assert_eq!(streaks(&awards), [(1, false)]);
        assert_eq!(stats.current_streak, 1);
    }

    #[test]
    fn consecutive_days_grow_the_streak_and_milestones_are_flagged() {
        let r = rules();
        let mut stats = Stats::default();
        let mut seen = Vec::new();
        for day in 1..=3 {
            let (next, awards) = apply(&r, &stats, ActivityKind::FocusCompleted, at(day, 9, 0, 0));
            seen.extend(streaks(&awards));
            stats = next;
        }
        assert_eq!(seen, [(1, false), (2, false), (3, true)]);
    }

    #[test]
    fn a_gap_starts_over() {
        let r = rules();
        let (stats, _) = apply(&r, &Stats::default(), ActivityKind::FocusCompleted, at(1, 9, 0, 0));
        let (stats, _) = apply(&r, &stats, ActivityKind::FocusCompleted, at(2, 9, 0, 0));
        let (stats, awards) = apply(&r, &stats, ActivityKind::FocusCompleted, at(4, 9, 0, 0));
        assert_eq!(streaks(&awards), [(1, false)]);
        assert_eq!((stats.current_streak, stats.longest_streak), (1, 2));
    }

    #[test]
    fn two_activities_on_one_utc_day_update_the_streak_once() {
        let r = rules();
        let (stats, first) = apply(&r, &Stats::default(), ActivityKind::FocusCompleted, at(1, 0, 0, 0));
        let (stats, second) = apply(&r, &stats, ActivityKind::FocusCompleted, at(1, 23, 59, 59));
        assert_eq!(streaks(&first), [(1, false)]);
        assert!(streaks(&second).is_empty());
        assert_eq!(stats.current_streak, 1);
    }

    #[test]
    fn a_late_activity_from_an_earlier_day_never_moves_the_streak_backwards() {
        let r = rules();
        let (stats, _) = apply(&r, &Stats::default(), ActivityKind::Message, at(1, 9, 0, 0));
        let (stats, _) = apply(&r, &stats, ActivityKind::Message, at(2, 9, 0, 0));
        let (stats, _) = apply(&r, &stats, ActivityKind::Message, at(3, 9, 0, 0));
        // A job from day 1, reclaimed after a crash, arrives on day 3.
        let (late, awards) = apply(&r, &stats, ActivityKind::Message, at(1, 10, 0, 0));
        assert!(streaks(&awards).is_empty());
        assert_eq!((late.current_streak, late.last_active_day), (3, stats.last_active_day));
        assert_eq!(late.messages, stats.messages + 1, "it still counts");
    }

    #[test]
    fn utc_midnight_is_the_day_boundary() {
        let r = rules();
        let (stats, _) = apply(&r, &Stats::default(), ActivityKind::FocusCompleted, at(1, 23, 59, 59));
        let (stats, awards) = apply(&r, &stats, ActivityKind::FocusCompleted, at(2, 0, 0, 0));
        assert_eq!(streaks(&awards), [(2, false)]);
        assert_eq!(stats.last_active_day, Some(at(2, 0, 0, 0).date_naive()));
    }

    #[test]
    fn progress_is_announced_once_when_crossing_half() {
        let r = rules();
        let mut stats = Stats::default();
        let mut progress = Vec::new();
        for i in 0..9 {
            let (next, awards) = apply(&r, &stats, ActivityKind::TaskCompleted, at(1, 10, i, 0));
            for a in awards {
                if let Award::Progress { achievement } = a {
                    progress.push((i, achievement.key));
                }
            }
            stats = next;
        }
        // task_master's threshold is 10: the 5th completion crosses 50 %, and only that one.
        assert_eq!(progress, [(4, "task_master".to_owned())]);
    }

    #[test]
    fn one_activity_can_earn_several_awards_in_order() {
        let (stats, awards) = apply(&rules(), &Stats::default(), ActivityKind::Message, at(1, 8, 0, 0));
        // First message: the streak starts and first_message unlocks (1 + 10 points: still level 1).
        assert!(matches!(awards[0], Award::Streak { current_streak: 1, .. }));
        assert!(matches!(&awards[1], Award::Unlocked { achievement, .. } if achievement.key == "first_message"));
        assert_eq!(awards.len(), 2);
        assert_eq!(stats.points, 11);
    }

    #[test]
    fn a_jump_of_several_levels_is_one_level_up_to_the_final_level() {
        let mut r = rules();
        r.points.task_completed = 250;
        let (stats, awards) = apply(&r, &Stats::default(), ActivityKind::TaskCompleted, at(1, 8, 0, 0));
        let ups: Vec<_> = awards.iter().filter(|a| matches!(a, Award::LevelUp { .. })).collect();
        assert_eq!(ups, [&Award::LevelUp { new_level: 3 }]);
        assert_eq!(stats.level, 3);
    }

    #[test]
    fn ten_tasks_unlock_task_master_with_its_level_up() {
        let r = rules();
        let mut stats = Stats::default();
        let mut all = Vec::new();
        for i in 0..10 {
            let (next, awards) = apply(&r, &stats, ActivityKind::TaskCompleted, at(1, 10, i, 0));
            all.extend(awards);
            stats = next;
        }
        // 10 × 10 points = 100 → level 2 at the 10th task, plus task_master's 50 points.
        assert!(all
            .iter()
            .any(|a| matches!(a, Award::Unlocked { achievement, level: 2 } if achievement.key == "task_master")));
        assert!(all.contains(&Award::LevelUp { new_level: 2 }));
        assert_eq!(stats.points, 150);
    }

    #[test]
    fn message_points_are_capped_per_window() {
        let r = rules();
        let cap = r.message_points_cap.clone().unwrap();
        let mut stats = Stats::default();
        for i in 0..cap.points + 40 {
            stats = apply(&r, &stats, ActivityKind::Message, at(1, 10, (i / 60) as u32, (i % 60) as u32)).0;
        }
        // first_message's 10, chatterbox's 50 (100 messages), and the cap's worth of messages.
        assert_eq!((stats.messages, stats.points), (cap.points + 40, cap.points + 10 + 50));
        // The next window earns again.
        let later = at(1, 10, 0, 0) + chrono::Duration::seconds(cap.window_seconds);
        let (next, _) = apply(&r, &stats, ActivityKind::Message, later);
        assert_eq!(next.points, stats.points + 1);
    }

    #[test]
    fn a_focus_session_counts_only_after_the_minimum_run() {
        let r = rules();
        assert!(!r.counts(ActivityKind::FocusCompleted, Some(r.focus_min_seconds - 1)));
        assert!(!r.counts(ActivityKind::FocusCompleted, None), "a completion that says nothing of its run");
        assert!(r.counts(ActivityKind::FocusCompleted, Some(r.focus_min_seconds)));
        assert!(r.counts(ActivityKind::Message, None));
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(Rules::parse("{}").is_err());
        let duplicate = DEFAULT_RULES.replace("\"id\": 2", "\"id\": 1");
        assert!(Rules::parse(&duplicate).is_err());
    }
}
