-- People are server-issued identities: a browser's cookie session or a bot's API token names one.
CREATE TABLE people (
    id             TEXT PRIMARY KEY,
    display_name   TEXT NOT NULL,
    -- The instance owner signed in with the operator's link; creators were let in by an invite
    -- and may create workspaces.
    instance_owner BOOLEAN NOT NULL DEFAULT false,
    may_create     BOOLEAN NOT NULL DEFAULT false,
    is_bot         BOOLEAN NOT NULL DEFAULT false,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    person_id    TEXT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    role         TEXT NOT NULL CONSTRAINT memberships_role CHECK (role IN ('owner', 'member', 'viewer')),
    -- With workspaces.approvers_only, only owners and approvers answer permission requests.
    approver     BOOLEAN NOT NULL DEFAULT false,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, person_id)
);
CREATE INDEX memberships_person ON memberships (person_id);

ALTER TABLE workspaces
    ADD COLUMN approvers_only BOOLEAN NOT NULL DEFAULT false,
    -- An existing directory under HUDDLE_PROJECTS_ROOT the owner picked; NULL: the default one.
    ADD COLUMN working_dir TEXT;

-- Invite links: only the SHA-256 of the secret in the URL is kept. A NULL workspace is an
-- instance invite ("may create workspaces").
CREATE TABLE invites (
    id           TEXT PRIMARY KEY,
    secret_hash  TEXT NOT NULL UNIQUE,
    workspace_id TEXT REFERENCES workspaces (id) ON DELETE CASCADE,
    role         TEXT NOT NULL CONSTRAINT invites_role CHECK (role IN ('member', 'viewer', 'creator')),
    created_by   TEXT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    uses         INTEGER NOT NULL DEFAULT 0,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX invites_workspace ON invites (workspace_id);

-- API tokens for scripts and bots: each is a bot person with a membership in one workspace.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    secret_hash  TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    person_id    TEXT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    created_by   TEXT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_tokens_workspace ON api_tokens (workspace_id);

-- Browser sessions (tower-sessions' Postgres store, the table its `migrate` would make): the
-- cookie holds only the session id; the person it names lives here.
CREATE SCHEMA IF NOT EXISTS tower_sessions;
CREATE TABLE IF NOT EXISTS tower_sessions.session (
    id          TEXT PRIMARY KEY NOT NULL,
    data        BYTEA NOT NULL,
    expiry_date TIMESTAMPTZ NOT NULL
);
