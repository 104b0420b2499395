//! Idempotency keys of the server API: a POST retried with the same `Idempotency-Key` gets the
//! first answer again and creates nothing new. The first request reserves the key; its 2xx
//! answer is kept for `KEEP_HOURS`; a failed one gives the key back, so that a retry runs again.

use super::{on_pool, Store, StoreError};

/// How long an answer is replayed.
const KEEP_HOURS: i64 = 24;
/// A reservation without an answer for this long belongs to a request that died: taken over.
const ABANDONED_SECS: i64 = 60;

/// What reserving a key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    /// The key is this request's: run it, then `complete_idempotency_key` or `release_…`.
    Reserved,
    /// A request with this key answered this.
    Answered { status: u16, body: String },
    /// A request with this key is running now.
    InProgress,
}

impl Store {
    pub async fn reserve_idempotency_key(&self, scope: &str, key: &str) -> Result<Reservation, StoreError> {
        // Only "now" is said differently by the two backends.
        let stale = match self {
            Store::Postgres(_) => format!(
                "(status IS NULL AND created_at < now() - interval '{ABANDONED_SECS} seconds')
                 OR created_at < now() - interval '{KEEP_HOURS} hours'"
            ),
            Store::Sqlite(_) => format!(
                "(status IS NULL AND created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-{ABANDONED_SECS} seconds'))
                 OR created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-{KEEP_HOURS} hours')"
            ),
        };
        let forget = format!("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND ({stale})");
        on_pool!(self, |pool| sqlx::query(&forget).bind(scope).bind(key).execute(pool).await.map(drop))?;
        let inserted = on_pool!(self, |pool| sqlx::query(
            "INSERT INTO idempotency_keys (scope, key) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        )
        .bind(scope)
        .bind(key)
        .execute(pool)
        .await
        .map(|done| done.rows_affected() == 1))?;
        if inserted {
            return Ok(Reservation::Reserved);
        }
        let found: Option<(Option<i32>, Option<String>)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT status, body FROM idempotency_keys WHERE scope = $1 AND key = $2"
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(pool)
        .await)?;
        Ok(match found {
            Some((Some(status), body)) => {
                Reservation::Answered { status: status as u16, body: body.unwrap_or_default() }
            }
            // No status yet: running. Gone meanwhile (taken over as abandoned): as good as running.
            _ => Reservation::InProgress,
        })
    }

    /// Keeps the answer of the request that reserved the key.
    pub async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE idempotency_keys SET status = $3, body = $4 WHERE scope = $1 AND key = $2"
        )
        .bind(scope)
        .bind(key)
        .bind(i32::from(status))
        .bind(body)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Gives the key back (the request failed): a retry runs again.
    pub async fn release_idempotency_key(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL"
        )
        .bind(scope)
        .bind(key)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }
}
