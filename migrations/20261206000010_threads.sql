-- A workspace holds threads: each its own conversation with its own agent session, log and state,
-- sharing the workspace's sandbox, working directory, people and lease.
CREATE TABLE threads (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    agent         TEXT NOT NULL,
    -- The sandbox-agent session (`<workspace>/default` for a workspace's first conversation).
    session_id    TEXT NOT NULL UNIQUE,
    -- A name someone gave it; NULL: the agent's session title, when it sent one.
    name          TEXT,
    agent_title   TEXT,
    archived      BOOLEAN NOT NULL DEFAULT false,
    -- {threadId, seq, how}: the thread and row it was forked from.
    forked_from   JSONB,
    created_by    TEXT REFERENCES people (id) ON DELETE SET NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX threads_workspace ON threads (workspace_id, created_at);

-- Existing workspaces keep their conversation as their first thread.
INSERT INTO threads (id, workspace_id, agent, session_id, created_at)
    SELECT replace(gen_random_uuid()::text, '-', ''), id, agent, id || '/default', created_at
    FROM workspaces;

ALTER TABLE room_log ADD COLUMN thread_id TEXT;
UPDATE room_log r SET thread_id = t.id FROM threads t WHERE t.workspace_id = r.workspace_id;
ALTER TABLE room_log
    ALTER COLUMN thread_id SET NOT NULL,
    DROP CONSTRAINT room_log_pkey,
    ADD PRIMARY KEY (thread_id, seq),
    ADD CONSTRAINT room_log_thread FOREIGN KEY (thread_id) REFERENCES threads (id) ON DELETE CASCADE;
CREATE INDEX room_log_workspace ON room_log (workspace_id);

ALTER TABLE room_state ADD COLUMN thread_id TEXT;
UPDATE room_state r SET thread_id = t.id FROM threads t WHERE t.workspace_id = r.workspace_id;
DELETE FROM room_state WHERE thread_id IS NULL;
ALTER TABLE room_state
    DROP CONSTRAINT room_state_pkey,
    ALTER COLUMN thread_id SET NOT NULL,
    ADD PRIMARY KEY (thread_id),
    ADD CONSTRAINT room_state_thread FOREIGN KEY (thread_id) REFERENCES threads (id) ON DELETE CASCADE;

-- How far each person has read each thread: unread counts follow them across browsers.
CREATE TABLE thread_reads (
    thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    person_id TEXT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    seq       BIGINT NOT NULL,
    PRIMARY KEY (thread_id, person_id)
);
