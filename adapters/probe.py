"""A container health probe: ``python -m adapters.probe URL`` exits 0 when ``URL`` answers 2xx
within ``PROBE_TIMEOUT_S``, 1 otherwise (the image has no curl; every process serves HTTP:
the API its ``/healthz`` and ``/readyz``, the others theirs on ``--health-port``)."""

from __future__ import annotations

import sys
import urllib.request

PROBE_TIMEOUT_S = 3.0  # below the compose health checks' own timeout, so the probe says why


def probe(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
            return 0 if 200 <= response.status < 300 else 1
    except OSError as error:  # refused, reset, timed out, or an HTTP error status
        print(f"probe {url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(probe(sys.argv[1]))
