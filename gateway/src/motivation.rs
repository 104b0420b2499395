//! Motivation texts for the Diary socket's `motivation_requested`. A trait, so that another
//! provider (a model, a service) can be plugged in; the built-in one needs no network.

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) trait MotivationProvider: Send + Sync + 'static {
    /// A short encouraging text for someone at `stress_level` (1–10) facing `challenge` (may be
    /// empty).
    fn motivate(&self, challenge: &str, stress_level: u8) -> String;
}

/// Phrases by stress band, rotated so that repeated requests do not read the same.
#[derive(Default)]
pub(crate) struct PhraseBook {
    turn: AtomicUsize,
}

/// (opening, closing) pairs per band: calm (1–3), busy (4–6), stressed (7–8), overwhelmed (9–10).
const BANDS: [[(&str, &str); 3]; 4] = [
    [
        ("You're in a good place to take on", "Keep the momentum going! 🚀"),
        ("Nice and steady —", "is well within your reach. ✨"),
        ("Calm minds do great work on", "Enjoy the flow! 🌟"),
    ],
    [
        ("You're doing great with", "Keep pushing forward! 💪"),
        ("Step by step,", "is getting done. You've got this! 🙌"),
        ("Good progress on", "Stay focused and keep going! 🎯"),
    ],
    [
        ("Take a deep breath.", "is hard, and you're still at it. One small step at a time. 🌱"),
        ("It's okay to feel the pressure of", "Break it into pieces and start with the smallest. 🧩"),
        ("You've handled tough things before, and", "is no different. Pause, then go again. 💙"),
    ],
    [
        ("Stop for a moment and breathe.", "can wait five minutes while you look after yourself. 🫶"),
        ("You don't have to solve all of", "today. Pick one tiny thing and let the rest go. 🌿"),
        ("Be kind to yourself.", "feels huge right now; ask for help, you're not alone. 🤝"),
    ],
];

fn band(stress_level: u8) -> usize {
    match stress_level {
        0..=3 => 0,
        4..=6 => 1,
        7..=8 => 2,
        _ => 3,
    }
}

impl MotivationProvider for PhraseBook {
    fn motivate(&self, challenge: &str, stress_level: u8) -> String {
        let phrases = &BANDS[band(stress_level)];
        let (opening, closing) = phrases[self.turn.fetch_add(1, Ordering::Relaxed) % phrases.len()];
        let challenge = challenge.trim();
        if challenge.is_empty() {
            format!("{opening} whatever today brings. {closing}")
        } else {
            format!("{opening} “{challenge}” {closing}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_challenge_and_follows_the_band() {
        let book = PhraseBook::default();
        let calm = book.motivate("Writing docs", 2);
        assert!(calm.contains("“Writing docs”"));
        let high = book.motivate("Release day", 10);
        assert!(high.contains("Release day"));
        assert!(BANDS[3].iter().any(|(open, _)| high.starts_with(open)));
        assert!(high.chars().any(|c| c as u32 > 0x1F000), "carries an emoji: {high}");
    }
}
