# remedyd's container image: beside a Docker Compose stack (deploy/compose/), in Kubernetes
# (deploy/kubernetes/), or on its own (README, "As a container").
#
#   docker build -t remedyd:local .
#
# BASE_IMAGE needs python3.11 with venv: the official slim image, or any Debian bookworm with
# python3-venv (tests/test_image.py builds one with mmdebstrap, no registry needed). A
# wheelhouse/ directory in the build context (scripts/wheelhouse) makes the build offline.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG EXTRAS=kubernetes,tracing,notify
WORKDIR /src
COPY pyproject.toml README.md ./
COPY daemon ./daemon
# COPY needs one source that exists (README.md); the `*` lets wheelhouse/ be absent.
COPY README.md wheelhouse* ./wheelhouse/
# Offline from the wheelhouse when it holds remedyd's wheel, else from the package index:
# this checkout, not a release, and pyproject.toml bounds its dependencies.
# hadolint ignore=DL3013
RUN python3 -m venv /opt/remedyd \
 && if ls wheelhouse/remedyd-*.whl >/dev/null 2>&1; then \
      /opt/remedyd/bin/pip install --no-cache-dir --no-index --find-links wheelhouse \
        "remedyd[${EXTRAS}]"; \
    else \
      /opt/remedyd/bin/pip install --no-cache-dir ".[${EXTRAS}]"; \
    fi \
 && /opt/remedyd/bin/pip uninstall --yes --no-cache-dir pip setuptools \
 && /opt/remedyd/bin/remedyd version

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="remedyd" \
      org.opencontainers.image.description="Event-driven monitoring and remediation daemon for Docker and Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="README.md, As a container"

# A numeric user, so `runAsNonRoot` and `docker run --user` can check it without a passwd
# lookup; the entry only names it for tools that print users.
RUN groupadd --system --gid 10001 remedyd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/remedyd \
      --shell /usr/sbin/nologin remedyd \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/remedyd

COPY --from=build /opt/remedyd /opt/remedyd
COPY rules /etc/remedyd/rules
COPY config.example.toml /etc/remedyd/config.toml

# The root filesystem can be read-only (`docker run --read-only`, readOnlyRootFilesystem):
# the audit log, its checkpoint and the security baseline are the only writes, all in
# /var/lib/remedyd, a volume. No bytecode is written at run time; pip compiled it.
ENV PATH=/opt/remedyd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REMEDYD_CONFIG=/etc/remedyd/config.toml \
    REMEDYD_RULES__PATHS='["/etc/remedyd/rules"]' \
    REMEDYD_AUDIT__PATH=/var/lib/remedyd/audit.jsonl \
    REMEDYD_SERVER__LISTEN=0.0.0.0:9464
VOLUME ["/var/lib/remedyd"]
USER 10001:10001
WORKDIR /var/lib/remedyd
EXPOSE 9464
# `remedyd health` asks /healthz at the configured [server] listen, so a changed port does
# not leave the check asking the old one. No --start-interval: the legacy builder (no
# buildx) rejects it; Compose's healthcheck.start_interval gives it where wanted.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["remedyd", "health"]
ENTRYPOINT ["remedyd"]
CMD ["run"]
