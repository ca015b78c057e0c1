-- Version 10: a payout's metadata as Stripe reports it, in the payouts read model
-- (projections.projections.PayoutsProjection, from Payout.MetadataReported): JSON on the payout
-- (NULL: none reported) and one row per pair, for GET /v1/payouts and its metadata[key]=value
-- filters.
-- depends: 0009.payments-read-model

ALTER TABLE rm_payouts ADD COLUMN metadata TEXT;

CREATE TABLE IF NOT EXISTS rm_payout_metadata (
    payout_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (payout_id, key)
);
