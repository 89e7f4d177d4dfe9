-- Images people attach to their prompts: kept here, referenced from the room log by id, served
-- to the workspace's members, and sent to the agent as ACP image blocks.
CREATE TABLE room_images (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    mime_type    TEXT NOT NULL,
    data         BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX room_images_workspace ON room_images (workspace_id);
