//! Awards as OneTask notifications, in onetask.md's exact shapes; the store keeps each with its
//! integer id and the worker publishes it to `user:{id}`.

use serde_json::json;
use shared::jobs::Activity;
use shared::store::{NewNotification, Scorer, UserStats};

use crate::rules::{apply, Award, Rules};

/// The worker's `Scorer`: the rules, and awards rendered as notifications.
pub struct Gamification {
    pub rules: Rules,
}

impl Scorer for Gamification {
    fn score(&self, stats: &UserStats, activity: &Activity) -> (UserStats, Vec<NewNotification>) {
        if !self.rules.counts(activity.activity, activity.ran_seconds) {
            return (stats.clone(), Vec::new());
        }
        let (next, awards) = apply(&self.rules, stats, activity.activity, activity.at);
        let notifications = awards.into_iter().map(|award| notification(activity, award)).collect();
        (next, notifications)
    }
}

fn notification(activity: &Activity, award: Award) -> NewNotification {
    let user_id = activity.user_id.clone();
    match award {
        Award::Unlocked { achievement: a, level } => NewNotification {
            user_id,
            wire_type: "achievement_unlocked".into(),
            title: "Achievement Unlocked!".into(),
            content: format!("You've unlocked the '{}' achievement and earned {} points!", a.name, a.points),
            notification_type: "achievement".into(),
            related_entity_type: Some("achievement".into()),
            related_entity_id: Some(json!(a.id)),
            data: Some(json!({
                "achievement_id": a.id,
                "achievement_name": a.name,
                "achievement_description": a.description,
                "points": a.points,
                "icon": a.icon,
                "level": level,
                "key": a.key,
            })),
        },
        Award::Progress { achievement: a } => NewNotification {
            user_id,
            wire_type: "achievement_progress".into(),
            title: "Achievement Progress".into(),
            content: format!("You're 50% of the way to unlocking '{}'!", a.name),
            notification_type: "achievement_progress".into(),
            related_entity_type: Some("achievement".into()),
            related_entity_id: Some(json!(a.id)),
            data: Some(json!({
                "achievement_id": a.id,
                "achievement_name": a.name,
                "progress": 0.5,
                "progress_percent": 50,
                "icon": a.icon,
                "key": a.key,
            })),
        },
        Award::Streak { current_streak, is_milestone } => NewNotification {
            user_id,
            wire_type: "streak_update".into(),
            title: if current_streak == 1 { "Streak Started".into() } else { "Streak Continued".into() },
            content: if current_streak == 1 {
                "You've started a streak: come back tomorrow to keep it going!".into()
            } else {
                format!("You've maintained your streak for {current_streak} consecutive days!")
            },
            notification_type: "streak".into(),
            related_entity_type: None,
            related_entity_id: None,
            data: Some(json!({"current_streak": current_streak, "is_milestone": is_milestone})),
        },
        Award::LevelUp { new_level } => NewNotification {
            user_id,
            wire_type: "level_up".into(),
            title: "Level Up!".into(),
            content: format!("Congratulations! You've reached level {new_level}!"),
            notification_type: "level_up".into(),
            related_entity_type: None,
            related_entity_id: None,
            data: Some(json!({"new_level": new_level})),
        },
    }
}
