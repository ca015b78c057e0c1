-- Version 4: held routings (projections.projections.RoutingHoldsProjection): payments whose
-- split transfers Stripe did not take for a key or permission reason (Payment.RoutingHeld), one
-- row each until the routing resumes, for /v1/status and the sweeper.
-- depends: 0003.accounts-read-model

CREATE TABLE IF NOT EXISTS rm_routing_holds (
    payment_id TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    destination TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    message TEXT NOT NULL,
    held_at BIGINT NOT NULL,
    holds BIGINT NOT NULL
);
