# remedyd as a container beside a Docker Compose stack (deploy/compose/) or in Kubernetes
# (deploy/kubernetes/, hence the kubernetes extra).
FROM python:3.11-slim

RUN useradd --system --uid 10001 --home-dir /var/lib/remedyd --create-home remedyd
WORKDIR /opt/remedyd
COPY pyproject.toml README.md ./
COPY daemon ./daemon
# This checkout with its extra, not a package from an index: pyproject.toml bounds its deps.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[kubernetes]" && rm -rf /root/.cache
COPY rules /etc/remedyd/rules
COPY config.example.toml /etc/remedyd/config.toml

ENV REMEDYD_RULES__PATHS='["/etc/remedyd/rules"]' \
    REMEDYD_AUDIT__PATH=/var/lib/remedyd/audit.jsonl \
    REMEDYD_SERVER__LISTEN=0.0.0.0:9464
USER 10001
WORKDIR /var/lib/remedyd
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)"]
ENTRYPOINT ["remedyd"]
CMD ["run", "--config", "/etc/remedyd/config.toml"]
