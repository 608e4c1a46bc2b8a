"""The releases the container tests deploy: images built from this checkout and pushed to a
loopback registry, as CI pushes a release (web, nginx and backup, tagged sha-<commit>, labelled
with the commit). Compose (tests/docker/test_releases.py) and Swarm (tests/docker/test_swarm.py)
deploy the same ones:

- A and B: this checkout, differing only in their release id;
- C: B whose Gunicorn exits at boot;
- D: B that is ready when asked directly and fails readiness once traffic comes through nginx,
  with a migration of its own;
- E: B whose readiness always fails.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import textwrap
from pathlib import Path

from . import REPO
from .compose import Stack
from .docker import DockerEngine

A, B, C, D, E = (letter * 39 + "1" for letter in "abcde")
RELEASES = (A, B, C, D, E)
REVISION = "org.opencontainers.image.revision"

# Appended to B's wsgi.py: readiness answers 503 when `condition` holds for the request.
READINESS_FAILING = textwrap.dedent("""
    inner = app.wsgi_app

    def readiness_failing(environ, start_response):
        if environ.get("PATH_INFO") == "/health/ready" and {condition}:
            start_response("503 Service Unavailable", [("Content-Type", "application/health+json")])
            return [b'{{"status": "fail"}}']
        return inner(environ, start_response)

    app.wsgi_app = readiness_failing
    """)
PINNED_NOTES_MIGRATION = textwrap.dedent("""
    import sqlalchemy as sa
    from alembic import op

    revision = "dddd00000001"
    down_revision = "{down_revision}"
    branch_labels = None
    depends_on = None


    def upgrade():
        op.add_column("notes", sa.Column("pinned", sa.Boolean(), nullable=True))


    def downgrade():
        op.drop_column("notes", "pinned")
    """)


def derive_web(engine: DockerEngine, registry: str, sha: str, wsgi_tail: str,
               migrations: dict[str, str] | None = None) -> None:
    """Release `sha`'s web image: B's, with `wsgi_tail` appended to its wsgi.py and `migrations`
    (file name: text) added to its own."""
    with tempfile.TemporaryDirectory() as context:
        Path(context, "wsgi_tail.py").write_text(wsgi_tail)
        lines = [f"FROM {registry}/flask-kit-web:sha-{B}", "USER root", "COPY wsgi_tail.py /tmp/",
                 "RUN cat /tmp/wsgi_tail.py >> /app/wsgi.py && rm /tmp/wsgi_tail.py"]
        for name, text in (migrations or {}).items():
            Path(context, name).write_text(text)
            lines.append(f"COPY {name} /app/migrations/versions/")
        lines += ["USER 10001:10001", f"ENV APP_RELEASE={sha}", f"LABEL {REVISION}={sha}"]
        Path(context, "Dockerfile").write_text("\n".join(lines) + "\n")
        engine.docker("build", "--quiet", "--tag", f"{registry}/flask-kit-web:sha-{sha}", context, capture=True)


def build_releases(engine: DockerEngine, base_images: dict[str, str], build_env: dict[str, str], registry: str) -> None:
    """A and B from this checkout, C, D and E derived from B; one nginx image content for all.
    Pushed to `registry`, and removed from the engine: a deploy must pull."""
    for sha in (A, B):
        env = {**build_env, "WEB_IMAGE": f"{registry}/flask-kit-web:sha-{sha}", "GIT_SHA": sha}
        Stack(engine, f"fk-build-{os.getpid()}", env, 0, 0).compose("build", "web")
    with tempfile.TemporaryDirectory() as context:
        # C: Gunicorn exits at boot (its migration, which needs no Gunicorn, runs fine)
        Path(context, "Dockerfile").write_text(
            f"FROM {registry}/flask-kit-web:sha-{B}\nUSER root\n"
            "RUN echo 'raise SystemExit(\"release C cannot start\")' >> /app/gunicorn.conf.py\nUSER 10001:10001\n"
            f"LABEL {REVISION}={C}\n")
        engine.docker("build", "--quiet", "--tag", f"{registry}/flask-kit-web:sha-{C}", context, capture=True)
    # D: ready when asked directly, 503 once traffic comes through nginx; and an expand migration
    head = subprocess.run(["grep", "-l", "^revision", *map(str, (REPO / "migrations" / "versions").glob("*.py"))],
                          capture_output=True, text=True).stdout.split()
    down_revision = max(Path(path).name.split("_")[1] for path in head)  # the newest (names start with a date)
    derive_web(engine, registry, D, READINESS_FAILING.format(condition='"HTTP_X_FORWARDED_FOR" in environ'),
               {"20991231_dddd00000001_pin_notes.py": PINNED_NOTES_MIGRATION.format(down_revision=down_revision)})
    # E: starts, and its readiness always answers 503 (a release that cannot work in production)
    derive_web(engine, registry, E, READINESS_FAILING.format(condition="True"))
    # nginx: A and B are two builds of the same files (deploy.sh compares content, not image
    # ids, to decide whether nginx must be replaced); C, D and E reuse B's
    for sha in (A, B):
        engine.docker("build", "--quiet", "--file", str(REPO / "nginx" / "Dockerfile"),
                      "--build-arg", f"NGINX_IMAGE={base_images['NGINX_IMAGE']}", "--build-arg", f"GIT_SHA={sha}",
                      "--tag", f"{registry}/flask-kit-nginx:sha-{sha}", str(REPO), capture=True)
    for sha in (A, B):
        engine.docker("build", "--quiet", "--file", str(REPO / "backup" / "Dockerfile"),
                      "--build-arg", f"POSTGRES_IMAGE={base_images['POSTGRES_IMAGE']}", "--build-arg", f"GIT_SHA={sha}",
                      "--tag", f"{registry}/flask-kit-backup:sha-{sha}", str(REPO), capture=True)
    for sha in (C, D, E):  # B's files, labelled as their own commit's (deploy.sh checks the label)
        for image in ("flask-kit-nginx", "flask-kit-backup"):
            with tempfile.TemporaryDirectory() as context:
                Path(context, "Dockerfile").write_text(f"FROM {registry}/{image}:sha-{B}\nLABEL {REVISION}={sha}\n")
                engine.docker("build", "--quiet", "--tag", f"{registry}/{image}:sha-{sha}", context, capture=True)
    for sha in RELEASES:
        for image in ("flask-kit-web", "flask-kit-nginx", "flask-kit-backup"):
            engine.docker("push", "--quiet", f"{registry}/{image}:sha-{sha}", capture=True)
            engine.docker("rmi", f"{registry}/{image}:sha-{sha}", capture=True)  # deploys must pull
