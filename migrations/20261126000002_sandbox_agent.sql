-- Sandbox Agent session records and their events, in the shapes of the TypeScript SDK's
-- SessionRecord and SessionEvent (times in milliseconds since the epoch), so the data stays portable.
CREATE SCHEMA IF NOT EXISTS sandbox_agent;

CREATE TABLE sandbox_agent.sessions (
    id                 TEXT PRIMARY KEY,
    agent              TEXT NOT NULL,
    -- Some agents (the builtin mock) answer session/new without a sessionId.
    agent_session_id   TEXT,
    last_connection_id TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    destroyed_at       BIGINT,
    session_init_json  JSONB,
    sandbox_id         TEXT
);
CREATE INDEX sessions_created_at_id ON sandbox_agent.sessions (created_at, id);

CREATE TABLE sandbox_agent.events (
    id            TEXT PRIMARY KEY,
    event_index   BIGINT NOT NULL,
    session_id    TEXT NOT NULL REFERENCES sandbox_agent.sessions (id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    connection_id TEXT NOT NULL,
    sender        TEXT NOT NULL CHECK (sender IN ('client', 'agent')),
    payload_json  JSONB NOT NULL,
    -- Gap-free per-session order; also the index behind keyset pages and the max-index lookup.
    CONSTRAINT events_session_index UNIQUE (session_id, event_index)
);
