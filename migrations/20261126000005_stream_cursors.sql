-- How far the event stream of each ACP connection has been persisted (sandbox-agent's SSE id), so
-- that a restarted Huddle can re-attach to a connection it had and resume exactly after it.
CREATE TABLE sandbox_agent.stream_cursors (
    connection_id  TEXT PRIMARY KEY,
    last_stream_id BIGINT NOT NULL
);
