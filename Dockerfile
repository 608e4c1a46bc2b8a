# Production image for the Flask service: a builder stage makes /opt/venv from
# the hashed lock file, the runtime stage copies only that venv and the code.
# Written for the classic builder as well as BuildKit: no RUN --mount, no
# heredocs, no `# syntax=` line. Build: docker build -t flask-kit-web .

# Pinned by patch version so a rebuild does not silently change Python; bump it
# deliberately (https://hub.docker.com/_/python). Both stages use the same base,
# so the venv's interpreter path exists at runtime. The test suite passes a
# locally built stand-in with the same interface (python on PATH, venv module).
ARG BASE_IMAGE=python:3.11.15-slim-bookworm

FROM ${BASE_IMAGE} AS builder

# Empty (default): pip installs from PyPI. Set to a directory inside the build
# context (e.g. build/wheels, filled by `pip download -r requirements.txt`) to
# install offline from it with --no-index. Hashes are checked either way.
ARG WHEELHOUSE=

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /build
# With WHEELHOUSE empty this copies requirements.txt alone; otherwise the
# wheelhouse's files land next to it.
COPY requirements.txt ${WHEELHOUSE} ./

# No compiler on purpose: every pinned dependency ships a manylinux wheel.
# --only-binary keeps it so: a dependency that would need building fails here.
# --require-hashes makes pip refuse anything not in the lock file.
RUN python -m venv /opt/venv \
 && if [ -n "${WHEELHOUSE}" ]; then set -- --no-index --find-links /build; else set --; fi \
 && /opt/venv/bin/pip install --require-hashes --only-binary=:all: "$@" -r requirements.txt \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${BASE_IMAGE} AS runtime

# A fixed UID/GID so volume ownership and `securityContext`-style checks are
# predictable across rebuilds; above the range distros hand out (< 1000).
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin app

# The official python images delete the standard library's bytecode, and this container can
# write none (read-only in production, PYTHONDONTWRITEBYTECODE): every start would compile
# the ssl, email, logging and json modules the app imports, 0.5 s of each cold start (docs/benchmarks.md).
RUN python -m compileall -q "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GUNICORN_BIND=0.0.0.0:8000

COPY --from=builder /opt/venv /opt/venv
COPY scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

WORKDIR /app
# Code stays root-owned: the app user can read it but not change it.
COPY wsgi.py gunicorn.conf.py ./
COPY migrations/ migrations/
COPY app/ app/
RUN python -m compileall -q /app
# The server's files for this release, beside the code they deploy: the Compose files and
# the scripts a server runs. CI's deploy key runs scripts/deploy-command.sh, which copies them
# out of the image it was told to deploy, so a server needs no checkout and nothing is
# copied to it over SSH. Owned by root: the app cannot change them.
COPY docker-compose.yml docker-compose.prod.yml docker-compose.secrets.yml /release/
COPY scripts/deploy.sh scripts/renew-certificates.sh scripts/make-secrets.sh /release/

# Last, so a new commit reuses every layer above. The release ends up in logs
# and Sentry events (APP_RELEASE); it is not a secret.
ARG GIT_SHA=unknown
ENV APP_RELEASE=${GIT_SHA}
LABEL org.opencontainers.image.revision=${GIT_SHA}

USER 10001:10001
EXPOSE 8000

# urlopen raises on connection errors and on any 4xx/5xx, so a 500 from
# /health marks the container unhealthy (curl without -f would not).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# The entrypoint only waits (bounded) for Postgres/Redis, then execs the
# command, so Gunicorn is PID 1 and receives docker stop's SIGTERM itself.
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
# gevent's launcher patches the standard library before Gunicorn imports anything, so the
# master can load the app once for every worker (preload_app, gunicorn.conf.py).
CMD ["python", "-m", "gevent.monkey", "--module", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
