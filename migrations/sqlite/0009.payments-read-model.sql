-- Version 9: the payments read model (projections.payments.PaymentsProjection): one row per
-- captured charge with its metadata as Stripe reports it (Payment.MetadataReported), and one
-- row per metadata pair, for GET /v1/payments and its metadata[key]=value filters.
-- depends: 0008.payout-stripe-details

CREATE TABLE IF NOT EXISTS rm_payments (
    id TEXT PRIMARY KEY,
    aggregate_id TEXT NOT NULL UNIQUE,
    position BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    charge_type TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount BIGINT NOT NULL,
    on_behalf_of TEXT,
    transfer_group TEXT,
    metadata TEXT NOT NULL,
    created BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS ix_payments_account ON rm_payments (account_id, position, id);

CREATE TABLE IF NOT EXISTS rm_payment_metadata (
    payment_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (payment_id, key)
);
