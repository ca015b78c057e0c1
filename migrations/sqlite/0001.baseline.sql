-- Version 1: Sluice's own tables exactly as `sluice db init` made them before versioned
-- migrations. Every statement is IF NOT EXISTS, so a database made by that version is adopted
-- as version 1 unchanged, and a new database gets the same tables. Frozen: change the schema
-- with a new file, never here. eventsourcing creates its own tables (adapters/schema.py).

CREATE TABLE IF NOT EXISTS rm_balances (
    account_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    pending BIGINT NOT NULL,
    available BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (account_id, currency)
);

CREATE TABLE IF NOT EXISTS rm_balance_transactions (
    id TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    type TEXT NOT NULL,
    amount BIGINT NOT NULL,
    fee BIGINT NOT NULL,
    fee_details TEXT NOT NULL,
    net BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    available_on BIGINT,
    created BIGINT NOT NULL,
    recorded BIGINT NOT NULL,
    source TEXT NOT NULL,
    reporting_category TEXT NOT NULL,
    description TEXT NOT NULL,
    entry_id TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS ix_bt_account ON rm_balance_transactions (account_id, currency, created, id);

CREATE INDEX IF NOT EXISTS ix_bt_pending ON rm_balance_transactions (account_id, currency, status, available_on);

CREATE INDEX IF NOT EXISTS ix_bt_account_position ON rm_balance_transactions (account_id, position, id);

CREATE TABLE IF NOT EXISTS rm_payouts (
    id TEXT PRIMARY KEY,
    aggregate_id TEXT NOT NULL UNIQUE,
    position BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount BIGINT NOT NULL,
    status TEXT NOT NULL,
    failure_code TEXT,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    timeline TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS ix_payouts_account ON rm_payouts (account_id, position, id);

CREATE TABLE IF NOT EXISTS rm_revenue (
    day TEXT NOT NULL,
    currency TEXT NOT NULL,
    fees_collected BIGINT NOT NULL,
    fees_refunded BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (day, currency)
);

CREATE TABLE IF NOT EXISTS rm_projection_meta (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    event_recorded BIGINT NOT NULL,
    updated BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS rm_api_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    created BIGINT NOT NULL,
    revoked BIGINT
);

CREATE TABLE IF NOT EXISTS sl_stripe_events (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    account TEXT,
    livemode BIGINT NOT NULL,
    created BIGINT NOT NULL,
    received BIGINT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    last_error TEXT,
    processed BIGINT,
    outcome TEXT
);

CREATE INDEX IF NOT EXISTS ix_stripe_events_status ON sl_stripe_events (status, created);

CREATE TABLE IF NOT EXISTS sl_merkle_leaves (
    leaf_index BIGINT PRIMARY KEY,
    position BIGINT NOT NULL UNIQUE,
    leaf_hash TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS sl_merkle_nodes (
    level BIGINT NOT NULL,
    node_index BIGINT NOT NULL,
    node_hash TEXT NOT NULL,
    PRIMARY KEY (level, node_index)
);

CREATE TABLE IF NOT EXISTS sl_merkle_head (
    name TEXT PRIMARY KEY,
    tree_size BIGINT NOT NULL,
    last_position BIGINT NOT NULL,
    compact_range TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS sl_merkle_checkpoints (
    tree_size BIGINT PRIMARY KEY,
    root_hash TEXT NOT NULL,
    last_position BIGINT NOT NULL,
    timestamp_us BIGINT NOT NULL,
    origin TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS sl_relay_position (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
