//! Waiting with a deadline instead of sleeping.

use std::future::Future;
use std::time::Duration;

/// Guards against hangs, never asserts speed: anything that takes this long has failed.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// Polls `check` until it is true; panics with `what` after [`HANG_GUARD`].
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(HANG_GUARD, what, check).await
}

/// Polls `check` until it is true; panics with `what` after `deadline` (for waits whose bound is
/// the behaviour under test, e.g. "persisted within a few seconds, not after a 15 s reclaim").
pub async fn within<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    while !check().await {
        assert!(tokio::time::Instant::now() < until, "gave up waiting {deadline:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
