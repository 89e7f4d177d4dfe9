-- Several Huddle nodes on one database: a lease names where its owner is reached (other nodes
-- forward actions there) and counts its owners (the fencing epoch: it goes up each time the
-- workspace changes hands, and each room-log write checks it in its own transaction).
ALTER TABLE workspace_leases
    ADD COLUMN node_url TEXT,
    ADD COLUMN epoch BIGINT NOT NULL DEFAULT 1;

-- Expired leases are what the nodes sweep for (an owner that died mid-turn).
CREATE INDEX workspace_leases_expires_at ON workspace_leases (expires_at);

-- The sign-in link of each running node (its secret's hash), renewed while the node runs: any
-- node accepts the link any running node printed; a stopped node's link ends with it.
CREATE TABLE sign_in_links (
    hash       TEXT PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);
