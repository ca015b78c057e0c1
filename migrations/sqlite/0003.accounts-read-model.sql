-- Version 3: the accounts read model (projections.projections.AccountsProjection): names,
-- emails and metadata folded from Stripe's account objects, for GET /v1/accounts and
-- `sluice accounts` (search, flags, metadata[key]=value filters).
-- depends: 0002.locks-and-key-labels

CREATE TABLE IF NOT EXISTS rm_accounts (
    id TEXT PRIMARY KEY,
    aggregate_id TEXT NOT NULL UNIQUE,
    position BIGINT NOT NULL,
    kind TEXT NOT NULL,
    country TEXT NOT NULL,
    default_currency TEXT NOT NULL,
    verification_status TEXT NOT NULL,
    charges_enabled INTEGER NOT NULL,
    payouts_enabled INTEGER NOT NULL,
    name TEXT,
    email TEXT,
    metadata TEXT NOT NULL,
    search TEXT NOT NULL,
    created BIGINT NOT NULL,
    closed INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS rm_account_metadata (
    account_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (account_id, key)
);
