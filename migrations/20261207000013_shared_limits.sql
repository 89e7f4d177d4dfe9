-- What holds per instance holds across nodes. Each running node says it is alive (`nodes`) and
-- writes how many live streams and Huddle tabs it has open per address and person
-- (`node_counts`); a node adds the other live nodes' counts when it decides. A node that died
-- stops being seen, and its counts stop counting.
CREATE TABLE nodes (
    id      TEXT PRIMARY KEY,
    seen_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE node_counts (
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    n    INT  NOT NULL,
    PRIMARY KEY (node, kind, key)
);
CREATE INDEX node_counts_key ON node_counts (kind, key);

-- Each person's prompt rate (GCRA: the theoretical arrival time of their next prompt), shared
-- by every node.
CREATE TABLE prompt_rates (
    person_id TEXT PRIMARY KEY,
    tat       TIMESTAMPTZ NOT NULL
);
