-- Version 6: onboarding and risk in the accounts read model (AccountsProjection):
-- rm_account_requirements (projections.requirements, from ConnectedAccount.RequirementsSet):
-- what Stripe still needs from each account, shown by GET /v1/accounts and `sluice accounts`;
-- rm_account_liability (projections.risk, from ledger.risk.LossLiability): who covers each
-- account's losses (controller.losses.payments), for the platform's exposure per seller.
-- depends: 0005.reconciliation

CREATE TABLE IF NOT EXISTS rm_account_requirements (
    account_id TEXT PRIMARY KEY,
    currently_due TEXT NOT NULL,
    past_due TEXT NOT NULL,
    eventually_due TEXT NOT NULL,
    disabled_reason TEXT,
    current_deadline BIGINT
);

CREATE TABLE IF NOT EXISTS rm_account_liability (
    account_id TEXT PRIMARY KEY,
    losses_payments TEXT NOT NULL
);
