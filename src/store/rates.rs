//! Each person's prompt rate, shared by every node: the generic cell rate algorithm (the one
//! `governor` runs in memory) with its one number per person, the theoretical arrival time of
//! the next prompt, kept in Postgres and moved in one statement.

use sqlx::PgPool;

use super::StoreError;

/// Takes one prompt of `person`'s quota of `per_minute` (at most that many at once, then one
/// every 60/`per_minute` s): Ok, or the whole seconds until they may prompt again.
pub async fn take(
    pool: &PgPool,
    person: &str,
    per_minute: u32,
) -> Result<Result<(), u64>, StoreError> {
    let per_minute = per_minute.max(1);
    let interval = 60.0 / f64::from(per_minute);
    // A prompt is allowed while the next arrival time is at most this far ahead of now.
    let tolerance = interval * f64::from(per_minute - 1);
    let taken: Option<(i32,)> = sqlx::query_as(
        "INSERT INTO prompt_rates (person_id, tat) VALUES ($1, now() + make_interval(secs => $2)) \
         ON CONFLICT (person_id) DO UPDATE \
           SET tat = greatest(prompt_rates.tat, now()) + make_interval(secs => $2) \
           WHERE prompt_rates.tat <= now() + make_interval(secs => $3) \
         RETURNING 1",
    )
    .bind(person)
    .bind(interval)
    .bind(tolerance)
    .fetch_optional(pool)
    .await?;
    if taken.is_some() {
        return Ok(Ok(()));
    }
    let wait: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM tat - now())::float8 - $2 FROM prompt_rates WHERE person_id = $1",
    )
    .bind(person)
    .bind(tolerance)
    .fetch_optional(pool)
    .await?;
    Ok(Err(wait.unwrap_or(1.0).ceil().max(1.0) as u64))
}

/// Forgets the rates of people whose quota is whole again.
pub async fn forget_full(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM prompt_rates WHERE tat < now()")
        .execute(pool)
        .await?;
    Ok(())
}
