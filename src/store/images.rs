//! Images people attach to prompts: stored once, referenced from the room log by id.

use sqlx::PgPool;

use super::StoreError;

pub async fn insert(
    pool: &PgPool,
    workspace_id: &str,
    id: &str,
    mime_type: &str,
    data: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO room_images (id, workspace_id, mime_type, data) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(workspace_id)
    .bind(mime_type)
    .bind(data)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes images no room-log entry refers to (those of a prompt the room refused).
pub async fn delete(pool: &PgPool, workspace_id: &str, ids: &[String]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM room_images WHERE workspace_id = $1 AND id = ANY($2)")
        .bind(workspace_id)
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// An image of a workspace: its type and bytes.
pub async fn load(
    pool: &PgPool,
    workspace_id: &str,
    id: &str,
) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT mime_type, data FROM room_images WHERE workspace_id = $1 AND id = $2",
    )
    .bind(workspace_id)
    .bind(id)
    .fetch_optional(pool)
    .await?)
}
