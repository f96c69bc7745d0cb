-- The SQLite store's schema as this version writes it. store.py runs every statement, in
-- one transaction, on a file that lacks any of it: a new file is made from this alone, and
-- a file written by an earlier version gets what it is missing (store.py first adds what an
-- IF NOT EXISTS cannot: a column, a table filled from the rows already there).

-- One row per inbound message; `data` is the whole Record as JSON.
CREATE TABLE IF NOT EXISTS records (
    message_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    outbound_message_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    data BLOB NOT NULL,
    fallback_reason TEXT,
    conversation TEXT
);
CREATE INDEX IF NOT EXISTS records_by_state ON records (state, updated_at);
CREATE INDEX IF NOT EXISTS records_by_outbound ON records (outbound_message_id);
CREATE INDEX IF NOT EXISTS records_by_created ON records (created_at);
-- The console's pages: each filter is a range of one of these.
CREATE INDEX IF NOT EXISTS records_by_updated ON records (updated_at, message_id);
-- Partial: records that never fell back (most) pay nothing for it on a save.
CREATE INDEX IF NOT EXISTS records_by_fallback
    ON records (fallback_reason, updated_at, message_id) WHERE fallback_reason IS NOT NULL;

-- A conversation's records (the agent inbox): its customer's messages and agents' replies.
CREATE INDEX IF NOT EXISTS records_by_conversation
    ON records (conversation, created_at, message_id) WHERE conversation IS NOT NULL;

-- One row per customer's conversation (domain/conversation.py), keyed by the customer key.
CREATE TABLE IF NOT EXISTS conversations (
    key TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    since REAL NOT NULL,
    reason TEXT NOT NULL,
    owner TEXT NOT NULL,
    customer_at REAL NOT NULL,
    last_message TEXT NOT NULL,
    agent_at REAL NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conversations_by_mode ON conversations (mode, since, key);
CREATE INDEX IF NOT EXISTS conversations_by_since ON conversations (since, key);

-- Who did what to a conversation (take over, reply, release), newest last.
CREATE TABLE IF NOT EXISTS conversation_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS conversation_audit_by_key ON conversation_audit (conversation, seq);

-- The latest delivery status of each reply sent.
CREATE TABLE IF NOT EXISTS deliveries (
    outbound_message_id TEXT PRIMARY KEY,
    message_id TEXT,
    status TEXT NOT NULL,
    rank INTEGER NOT NULL,
    at INTEGER NOT NULL,
    errors BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_message ON deliveries (message_id);

-- Each outbound message counted as billable (store.count_billable), so statuses that repeat
-- its pricing (sent, delivered, read) count it once; purged with the records.
CREATE TABLE IF NOT EXISTS billed (
    outbound_message_id TEXT PRIMARY KEY,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS billed_by_at ON billed (at);

CREATE TABLE IF NOT EXISTS turns (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns (conversation, seq);

-- A customer key (a BSUID's keyed hash) that another key (their number's, or an earlier
-- BSUID's) stands for; `at`: last named, so purge ends it with the records at the retention.
CREATE TABLE IF NOT EXISTS aliases (
    alias TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS pacing (
    key TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
);

-- The console's counters of each minute and hour bucket (and the cost counters per day).
CREATE TABLE IF NOT EXISTS ops_counters (
    width INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    name TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (width, bucket, name)
) WITHOUT ROWID;

-- Records per state, kept by these triggers so no write pays for it in Python.
CREATE TABLE IF NOT EXISTS state_counts (
    state TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS records_count_insert AFTER INSERT ON records BEGIN
    INSERT INTO state_counts (state, n) VALUES (new.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS records_count_state AFTER UPDATE OF state ON records
    WHEN old.state <> new.state BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = old.state;
    INSERT INTO state_counts (state, n) VALUES (new.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS records_count_delete AFTER DELETE ON records BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = old.state;
END;
