-- Version 2: who holds a process lock (relay, scheduler, a projector: adapters/locks.py), so a
-- second instance can say who runs; API keys get a label and the key that replaced them
-- (`sluice keys rotate`).
-- depends: 0001.baseline

CREATE TABLE sl_lock_holders (
    name TEXT PRIMARY KEY,
    pid BIGINT NOT NULL,
    host TEXT NOT NULL,
    since BIGINT NOT NULL
);

ALTER TABLE rm_api_keys ADD COLUMN label TEXT;

ALTER TABLE rm_api_keys ADD COLUMN replaced_by TEXT;
