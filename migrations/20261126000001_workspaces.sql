-- A workspace is one shared room: one agent in one sandbox.
CREATE TABLE workspaces (
    id               TEXT PRIMARY KEY,
    agent            TEXT NOT NULL,
    sandbox_id       TEXT NOT NULL,
    sandbox_base_url TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
