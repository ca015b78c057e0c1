-- Version 7: payouts in every currency and payout fees in the payouts read model
-- (projections.projections.PayoutsProjection, from Payout.FeeCharged and Payout.Converted):
-- Stripe's fee on the payout (an Instant Payout's), the platform's fee on it (payout
-- monetization), and, for a payout Stripe converted, what reached the bank and at what rate.
-- depends: 0006.onboarding-and-risk

ALTER TABLE rm_payouts ADD COLUMN stripe_fee BIGINT;
ALTER TABLE rm_payouts ADD COLUMN application_fee BIGINT;
ALTER TABLE rm_payouts ADD COLUMN bank_currency TEXT;
ALTER TABLE rm_payouts ADD COLUMN bank_amount BIGINT;
ALTER TABLE rm_payouts ADD COLUMN exchange_rate TEXT;
