-- Version 8: a payout as Stripe reports it, in the payouts read model
-- (projections.projections.PayoutsProjection, from Payout.Reported): Stripe's po_ id, its
-- arrival date (unix seconds), its destination (the external account's id) and Stripe's
-- failure message (failure_code is there since version 1), and whether Stripe made it on the
-- account's schedule (automatic, 0 or 1).
-- depends: 0007.payout-fees-and-fx

ALTER TABLE rm_payouts ADD COLUMN stripe_payout_id TEXT;
ALTER TABLE rm_payouts ADD COLUMN arrival_date BIGINT;
ALTER TABLE rm_payouts ADD COLUMN destination TEXT;
ALTER TABLE rm_payouts ADD COLUMN failure_message TEXT;
ALTER TABLE rm_payouts ADD COLUMN automatic INTEGER;
