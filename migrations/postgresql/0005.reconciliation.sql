-- Version 5: reconciliation's read models (projections.reconciliation): breaks between Sluice's
-- books and Stripe's balance transactions, each with its name, Stripe object, ledger entries,
-- difference and first-seen/resolved instants (`sluice reconcile status`,
-- GET /v1/reconciliation/breaks), and each account's clearing book per currency.
-- depends: 0004.routing-holds

CREATE TABLE IF NOT EXISTS rm_recon_breaks (
    id TEXT PRIMARY KEY,
    aggregate_id TEXT NOT NULL UNIQUE,
    position BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    object TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    stripe_ref TEXT NOT NULL,
    ledger_ref TEXT NOT NULL,
    difference TEXT NOT NULL,
    detail TEXT NOT NULL,
    clearing BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    resolved_at BIGINT,
    resolution TEXT,
    updated BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS ix_recon_breaks_status ON rm_recon_breaks (status, position, id);

CREATE TABLE IF NOT EXISTS rm_clearing (
    account_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount BIGINT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (account_id, currency)
);
