-- What a room had in flight (running turn, queue, open permission requests): recoverable after a crash.
CREATE TABLE room_state (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    state        JSONB NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One owning Huddle process per workspace; a lease that is not renewed expires.
CREATE TABLE workspace_leases (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    owner        TEXT NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);
