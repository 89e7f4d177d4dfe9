-- A sandbox per workspace (the reference design's sandboxId + baseUrl): where its agent runs.

-- sandbox-agent servers the instance owner registered: workspaces are placed over them.
CREATE TABLE sandbox_hosts (
    -- The URL's host and port: how people see the host.
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL UNIQUE,
    -- The server's bearer token: never sent to browsers.
    token      TEXT,
    -- Where workspaces' working directories are made on the host.
    cwd_root   TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE sandboxes (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL UNIQUE REFERENCES workspaces (id) ON DELETE CASCADE,
    -- local: bubblewrap on this machine; none: this machine, not sandboxed; remote: a host.
    provider     TEXT NOT NULL CHECK (provider IN ('local', 'none', 'remote')),
    -- The host it is placed on (NULL: this machine).
    host_id      TEXT REFERENCES sandbox_hosts (id),
    state        TEXT NOT NULL DEFAULT 'created'
                 CHECK (state IN ('created', 'running', 'stopped', 'unreachable')),
    last_seen_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sandboxes_host ON sandboxes (host_id);

-- Workspaces made before: each gets a sandbox of its own on this machine.
INSERT INTO sandboxes (id, workspace_id, provider)
    SELECT 'sbx_' || left(id, 12), id, 'local' FROM workspaces;
UPDATE workspaces SET sandbox_id = 'sbx_' || left(id, 12), sandbox_base_url = 'local';
