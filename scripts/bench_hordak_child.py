"""Runs inside the bench's own django-hordak environment (never the project's): sets up Django on
one PostgreSQL schema, migrates hordak, and measures ``Account.transfer_to`` per second at each
client thread count, each transfer in its own ``transaction.atomic()`` (hordak checks that a
transaction's legs sum to zero when it commits). Prints one JSON object on stdout.

A routed payment is two transfers here (customer funds -> platform, the gross; platform -> seller,
the net), as issue 13 counts them."""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from decimal import Decimal


def setup(args: argparse.Namespace) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "mptt", "hordak"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": args.dbname,
                "USER": args.user,
                "HOST": args.host,
                "PORT": args.port,
                "OPTIONS": {"options": f"-c search_path={args.schema}"},
            }
        },
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        DEFAULT_CURRENCY="USD",
        HORDAK_CURRENCIES=["USD"],
        HORDAK_INTERNAL_CURRENCY="USD",
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def accounts(sellers: int) -> tuple[object, object, list[object]]:
    from hordak.models import Account

    customer = Account.objects.create(name="customer funds", type="AS", currencies=["USD"])
    platform = Account.objects.create(name="platform", type="LI", currencies=["USD"])
    shops = [
        Account.objects.create(name=f"seller {n}", type="LI", currencies=["USD"])
        for n in range(sellers)
    ]
    return customer, platform, shops


def measure(
    threads: int, seconds: float, customer: object, platform: object, shops: list[object]
) -> dict[str, object]:
    from django.db import connection, transaction
    from djmoney.money import Money

    counts = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    barrier = threading.Barrier(threads + 1)
    box: dict[str, float] = {}

    def client(i: int) -> None:
        rng = random.Random(i)
        try:
            barrier.wait(60)
            while time.perf_counter() < box["deadline"]:
                cents = rng.randint(500, 50_000)
                gross = Money(Decimal(cents) / 100, "USD")
                net = Money(Decimal(cents - cents // 10) / 100, "USD")
                legs = ((customer, platform, gross), (platform, rng.choice(shops), net))
                for source, target, amount in legs:
                    began = time.perf_counter()
                    with transaction.atomic():
                        source.transfer_to(target, amount)
                    latencies[i].append(time.perf_counter() - began)
                    counts[i] += 1
        except Exception as error:  # counted, shown
            errors.append(f"{type(error).__name__}: {error}")
        finally:
            connection.close()

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    box["start"] = time.perf_counter()
    box["deadline"] = box["start"] + seconds
    barrier.wait(60)
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - box["start"]
    flat = sorted(x for lat in latencies for x in lat)

    def pct(f: float) -> float | None:
        return flat[max(0, int(f * len(flat) + 0.999999) - 1)] * 1e3 if flat else None

    return {
        "threads": threads,
        "transfers": sum(counts),
        "seconds": elapsed,
        "transfers_per_s": sum(counts) / elapsed,
        "payments_per_s": sum(counts) / 2 / elapsed,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "errors": len(errors),
        "error_samples": errors[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("host", "port", "dbname", "user", "schema"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--threads", default="1,16")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sellers", type=int, default=50)
    args = parser.parse_args()
    setup(args)
    customer, platform, shops = accounts(args.sellers)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        rows.append(measure(threads, args.seconds, customer, platform, shops))
    from importlib import metadata

    from django.db import connection

    with connection.cursor() as cursor:  # every transfer's legs sum to zero, so do all of them
        cursor.execute("SELECT coalesce(sum(debit), 0) - coalesce(sum(credit), 0) FROM hordak_leg")
        imbalance = cursor.fetchone()[0]
    version = metadata.version("django-hordak")
    print(json.dumps({"hordak": version, "rows": rows, "balanced": imbalance == 0}))


if __name__ == "__main__":
    main()
