-- Needs you: what waits on a person (an inbox across workspaces), how they want to hear of it
-- (browser push, per-person settings, mutes) and a team webhook per workspace.

-- One row per person and thing that needs them: a permission request they may answer, a turn
-- they started that ended, a message that mentions them. Written in the room-log batch's own
-- transaction, so it exists exactly when the entry does. A permission row is done once answered
-- or withdrawn; the others leave the inbox once the person read the thread past them.
CREATE TABLE inbox (
    person_id    TEXT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    thread_id    TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    kind         TEXT NOT NULL CONSTRAINT inbox_kind CHECK (kind IN ('permission', 'turn_ended', 'mention')),
    request_id   TEXT,
    created_at   BIGINT NOT NULL,
    done         BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (person_id, thread_id, seq)
);
CREATE INDEX inbox_open ON inbox (person_id, created_at DESC) WHERE NOT done;
CREATE INDEX inbox_requests ON inbox (thread_id, request_id) WHERE kind = 'permission' AND NOT done;

-- How a person wants to be told when no tab of theirs is open.
CREATE TABLE notify_settings (
    person_id TEXT PRIMARY KEY REFERENCES people (id) ON DELETE CASCADE,
    level     TEXT NOT NULL DEFAULT 'all' CONSTRAINT notify_level CHECK (level IN ('all', 'important', 'none'))
);
CREATE TABLE notify_mutes (
    person_id    TEXT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    PRIMARY KEY (person_id, workspace_id)
);

-- Browsers' push subscriptions (RFC 8030 endpoints with their RFC 8291 keys).
CREATE TABLE push_subscriptions (
    endpoint   TEXT PRIMARY KEY,
    person_id  TEXT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    p256dh     TEXT NOT NULL,
    auth       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX push_subscriptions_person ON push_subscriptions (person_id);

-- Keys the instance makes on first start and keeps (the VAPID key pair).
CREATE TABLE instance_keys (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

ALTER TABLE workspaces
    ADD COLUMN webhook_url TEXT,
    ADD COLUMN webhook_secret TEXT;

-- What must be sent out: a webhook POST per event, a push per inbox row. Written with the entry
-- it announces; a sender claims rows (next_at moves on), sends, and marks them sent, so a restart
-- loses none and, unless it hits between a send and its mark, sends none twice.
CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    kind         TEXT NOT NULL CONSTRAINT outbox_kind CHECK (kind IN ('webhook', 'push')),
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    thread_id    TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    -- The person a push is for ('' for a webhook).
    person_id    TEXT NOT NULL DEFAULT '',
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at      TIMESTAMPTZ,
    failed       TEXT,
    UNIQUE (kind, thread_id, seq, person_id)
);
CREATE INDEX outbox_due ON outbox (next_at) WHERE sent_at IS NULL AND failed IS NULL;
