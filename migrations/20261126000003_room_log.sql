-- The room log: everything a workspace's room shows, in one gap-free sequence per workspace.
CREATE TABLE room_log (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    data         JSONB NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, seq)
);
