# One image for every Sluice process: the API, the projector, the relay, the scheduler, the
# workers, the one-shot migration and the Stripe sandbox; the compose file picks the command.
#
#   docker build -t sluice .
#   docker run --rm sluice sluice --help

# --- build: the package and its runtime dependencies in a virtualenv (no dev extras) --------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/sluice
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY ledger ledger
COPY projections projections
COPY adapters adapters
COPY workers workers
COPY stripe_sandbox stripe_sandbox
COPY migrations migrations
RUN /opt/sluice/bin/pip install .

# --- run: the virtualenv only, as an unprivileged user ------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/sluice/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SLUICE_LOG_FORMAT=json \
    SLUICE_METRICS_HOST=0.0.0.0 \
    SLUICE_HEALTH_HOST=0.0.0.0
RUN groupadd --system --gid 10001 sluice \
    && useradd --system --uid 10001 --gid sluice --home-dir /app --shell /usr/sbin/nologin sluice \
    && mkdir -p /app && chown sluice:sluice /app
COPY --from=build /opt/sluice /opt/sluice
WORKDIR /app
USER sluice:sluice

# 8000: the API (sluice serve); 9100: metrics of the projector, relay and scheduler; 9191: the
# workers' metrics (dramatiq's exposition process); 9200: /healthz and /readyz of the projector,
# relay, scheduler and workers (--health-port); 12111: the Stripe sandbox.
EXPOSE 8000 9100 9191 9200 12111
# The API's liveness by default; compose gives each process its own probe.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=5 \
    CMD ["python", "-m", "adapters.probe", "http://127.0.0.1:8000/healthz"]
CMD ["sluice", "--help"]
