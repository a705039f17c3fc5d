# incident-worker: the web process and the background process, supervised by `incident-worker serve`.
#
#   docker build -t incident-worker .
#   docker run -p 8080:8080 -v iw-data:/data -e WORKER_PAGERDUTY_WEBHOOK_SECRETS=... incident-worker
#
# The embedded default is SQLite on /data (one replica); set WORKER_DATABASE_URL to a PostgreSQL URL for
# several. The example config and playbooks are baked in at /app; mount your own over them (the Helm
# chart does so from ConfigMaps).

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker ./worker
# Wheels for the worker and every dependency, so the runtime image needs no compiler and no cache.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WORKER_DATABASE_URL=sqlite:////data/incident-worker.db
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin worker \
    && mkdir -p /data \
    && chown worker /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels incident-worker \
    && rm -rf /wheels
WORKDIR /app
COPY config ./config
COPY playbooks ./playbooks
USER 10001
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["incident-worker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--config", "/app/config", "--playbooks", "/app/playbooks"]
