"""Entry module for the dramatiq CLI: ``dramatiq workers.main`` (or ``sluice worker``).

Importing this module — and only this one — creates the broker from ``SLUICE_BROKER_URL``
(default ``amqp://guest:guest@127.0.0.1:5672/``) and declares the actors on it, with queue
names prefixed by ``SLUICE_QUEUE_PREFIX`` (default none). The actors build their Ledger,
read-model store and Stripe gateway from the ``SLUICE_*`` settings on first use.
"""

from __future__ import annotations

import logging

from workers.actors import setup
from workers.broker import broker_url, make_broker, queue_prefix

logging.getLogger("sluice.workers").setLevel(logging.INFO)

broker = make_broker(broker_url())
actors = setup(broker, queue_prefix())
