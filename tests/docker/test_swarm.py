"""The kit on Docker Swarm (deploy/swarm/stack.yml, scripts/swarm.sh), on a single-node swarm
of the private engine, while users read and write through nginx TLS at 100 requests/s and
every answer is counted by clients that never resend.

The releases are harness/releases.py's, from the same loopback registry as the Compose tests:
A, then B, then E (its readiness always fails, so Swarm must roll it back), then back to A, and
A again with a rotated secret.
The swarm is left and everything it ran is removed at the end. This kernel has no IPVS: nginx publishes in host
mode and finds web by DNS round robin, as the stack file does everywhere.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import REPO
from harness.docker import DockerEngine
from harness.https import SERVER_NAME, Client, tls_context
from harness.load import Recorder
from harness.process import free_port
from harness.releases import A, B, E
from harness.traffic import Users, switches_under_load
from harness.wait import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SWARM = REPO / "scripts" / "swarm.sh"
STACK = "fk-swarm"
RATE = 100
LOAD_USERS = 8  # 12.5 requests/s each: fewer sign-ups (two password hashes each) to wait for
SECRET_NAMES = ("secret_key", "database_url", "redis_url", "postgres_password", "redis_password")


@dataclass
class SwarmSite:
    """The deploy directory on the manager, and the site nginx serves from it."""

    engine: DockerEngine
    path: Path
    env: dict[str, str]
    https_port: int
    tls: object = None

    def swarm(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([str(SWARM), *args], cwd=self.path, env=self.env, capture_output=True, text=True,
                                timeout=600)
        print(f"swarm.sh {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}")
        return result

    def docker(self, *args: str, check: bool = True) -> str:
        return self.engine.docker(*args, check=check, capture=True).stdout.decode()

    def containers(self, service: str, every: bool = False) -> list[str]:
        """The service's running containers, or `every` one, exited ones included."""
        label = f"label=com.docker.swarm.service.name={STACK}_{service}"
        return self.docker("ps", "--quiet", *(["--all"] if every else []), "--filter", label).split()

    def client(self, **options) -> Client:
        if self.tls is None:
            nginx = self.containers("nginx")[0]
            self.tls = tls_context(cadata=self.docker("exec", nginx, "cat", "/etc/nginx/certs/fullchain.pem"))
        return Client(self.https_port, self.tls, SERVER_NAME, **options)

    def sql(self, statement: str) -> str:
        db = self.containers("db")[0]
        return self.docker("exec", db, "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "flask",
                           "-d", "flask", "-c", statement).strip()

    def replica_releases(self) -> list[str]:
        """Each running web task's release id, asked inside its container (not through nginx)."""
        ask = ("import json, urllib.request; print(json.load(urllib.request.urlopen("
               "'http://127.0.0.1:8000/health/ready', timeout=5))['releaseId'])")
        return sorted(self.docker("exec", container, "python", "-c", ask).strip()
                      for container in self.containers("web"))

    def web_tasks_running(self) -> int:
        return len(self.containers("web"))

    def settled_releases(self, tasks: int) -> list[str]:
        """replica_releases() once `tasks` web containers remain: a task Swarm replaced may
        still be draining (up to its stop_grace_period) after the update says it is done."""
        wait_for(lambda: self.web_tasks_running() == tasks, 60, f"{tasks} web containers")
        return self.replica_releases()


def content_secret(name: str, file: Path) -> str:
    """The Swarm secret swarm.sh makes of a file: named after its content."""
    return f"{STACK}_{name}_{hashlib.sha256(file.read_bytes()).hexdigest()[:12]}"


@pytest.fixture(scope="module")
def site(docker_engine, base_images, release_registry, tmp_path_factory) -> Iterator[SwarmSite]:
    """A single-node swarm (labelled for data and edge) and a deploy directory as docs/scaling.md
    sets it up: the stack file, .env, and scripts/make-secrets.sh's files."""
    path = tmp_path_factory.mktemp("swarm")
    shutil.copy(REPO / "deploy" / "swarm" / "stack.yml", path / "stack.yml")
    secrets = path / "secrets"
    subprocess.run([str(REPO / "scripts" / "make-secrets.sh"), str(secrets)], check=True, capture_output=True)
    https_port = free_port()
    (path / ".env").write_text("".join(f"{name}={value}\n" for name, value in {
        "REGISTRY": release_registry, "DOMAIN": "localhost", "SECRETS_DIR": secrets,
        "HTTP_PORT": free_port(), "HTTPS_PORT": https_port, "WEB_REPLICAS": "1",
        # a release failing readiness is unhealthy after 10 + 5 × 2 s rather than 15 + 5 × 5 s
        "WEB_HEALTH_INTERVAL": "2s", "WEB_HEALTH_START_PERIOD": "10s",
        # all test traffic reaches nginx from one address (docker-proxy's): lift the per-address limits
        "NGINX_API_RATE": "100000r/s", "NGINX_API_BURST": "100000", "NGINX_CONN_LIMIT": "10000",
        "POSTGRES_IMAGE": base_images["POSTGRES_IMAGE"], "REDIS_IMAGE": base_images["REDIS_IMAGE"],
    }.items()))
    env = {**docker_engine.env, "SWARM_STACK": STACK, "SWARM_TIMEOUT": "240"}
    site = SwarmSite(docker_engine, path, env, https_port)
    docker_engine.docker("swarm", "init", "--advertise-addr", "127.0.0.1", capture=True)
    try:
        node = site.docker("info", "--format", "{{.Swarm.NodeID}}").strip()
        site.docker("node", "update", "--label-add", "flask-kit.data=true", "--label-add", "flask-kit.edge=true", node)
        yield site
    finally:
        # The stack's tasks stop, then the swarm goes with its networks and secrets; the
        # migration job's exited containers and the volumes are removed by hand.
        docker_engine.docker("stack", "rm", STACK, check=False, capture=True)
        label = f"label=com.docker.stack.namespace={STACK}"
        try:
            wait_for(lambda: not site.docker("ps", "--quiet", "--filter", label), 90, "the stack's tasks stopped")
        finally:
            docker_engine.docker("swarm", "leave", "--force", check=False, capture=True)
            leftovers = site.docker("ps", "--quiet", "--all", "--filter", label, check=False).split()
            if leftovers:
                docker_engine.docker("rm", "--force", *leftovers, check=False, capture=True)
            volumes = site.docker("volume", "ls", "--quiet", "--filter", f"name={STACK}_").split()
            if volumes:
                docker_engine.docker("volume", "rm", "--force", *volumes, check=False, capture=True)


@pytest.fixture(scope="module")
def users(site) -> Iterator[Users]:
    deployed = site.swarm("deploy", A)
    if deployed.returncode != 0:
        tasks = site.docker("service", "ps", "--no-trunc", "--format", "{{.Name}} {{.CurrentState}} {{.Error}}",
                            *(f"{STACK}_{service}" for service in ("db", "redis", "migrate", "web", "nginx")),
                            check=False)
        logs = [site.engine.docker("logs", "--tail", "20", container, check=False, capture=True, timeout=30)
                for service in ("migrate", "web") for container in site.containers(service, every=True)]
        pytest.fail("\n".join([deployed.stderr, tasks, *((log.stdout + log.stderr).decode(errors="replace")
                                                         for log in logs)]))
    wait_for(lambda: site.client().request("GET", "/health/ready").status == 200, 60, "readiness through nginx")
    users = Users(site, LOAD_USERS)
    yield users
    users.close()


def under_load(site: SwarmSite, users: Users, *commands: tuple[str, ...]
               ) -> tuple[list[subprocess.CompletedProcess], Recorder]:
    """swarm.sh commands one after another, under the users' load (harness/traffic.py)."""
    results, recorder = switches_under_load(users, [lambda args=args: site.swarm(*args) for args in commands],
                                            rate=RATE)
    print(f"load: {recorder.summary()}")
    return results, recorder


def failures(recorder: Recorder, *ops: str) -> Counter:
    return Counter(("error" if o.status is None else o.status) for o in recorder.outcomes
                   if not o.ok and (not ops or o.op in ops))


def test_the_stack_deploys_and_every_service_runs(site, users):
    status = site.swarm("status")
    assert status.returncode == 0, status.stderr
    for service in ("web", "nginx", "db", "redis"):
        assert len(site.containers(service)) == 1, service
    assert site.replica_releases() == [A]
    migration = site.docker("service", "ps", "--format", "{{.CurrentState}}", f"{STACK}_migrate")
    assert migration.startswith("Complete"), migration
    assert site.sql("SELECT count(*) FROM alembic_version") == "1"


def test_scale_from_1_to_3_and_back_to_2_drops_nothing(site, users):
    results, recorder = under_load(site, users, ("scale", "3"), ("scale", "2"))

    assert [result.returncode for result in results] == [0, 0], [result.stderr for result in results]
    assert site.web_tasks_running() == 2
    assert not failures(recorder), (recorder.summary(), users.refusals)
    assert users.verify_writes() == []


def test_a_rolling_update_from_a_to_b_drops_nothing(site, users):
    (result,), recorder = under_load(site, users, ("deploy", B))

    assert result.returncode == 0, result.stderr
    assert "migrating with" in result.stdout
    assert not failures(recorder), (recorder.summary(), users.refusals)
    assert users.verify_writes() == []
    assert site.settled_releases(2) == [B, B]
    assert json.loads(site.client().request("GET", "/health/ready").body)["releaseId"] == B


def test_an_update_that_fails_its_healthcheck_is_rolled_back_by_swarm(site, users):
    """E starts but is never ready: its first task fails the readiness healthcheck, and Swarm
    rolls web back to B by itself; B's tasks never stopped (start-first). Readiness polls that
    nginx sent to E's task (while it was starting) may fail; reads and writes may not."""
    (result,), recorder = under_load(site, users, ("deploy", E))

    assert result.returncode == 1
    assert "Swarm rolled web back" in result.stderr
    assert E not in (site.path / "releases.log").read_text()
    state = site.docker("service", "inspect", "--format", "{{.UpdateStatus.State}}", f"{STACK}_web").strip()
    assert state == "rollback_completed"
    assert site.settled_releases(2) == [B, B]
    print(f"failed readiness polls during the failed update: {dict(failures(recorder, 'ready'))}")
    assert not failures(recorder, "read", "write"), (recorder.summary(), users.refusals)
    assert users.verify_writes() == []


def test_a_rollback_returns_to_the_release_before_without_migrating(site, users):
    (result,), recorder = under_load(site, users, ("rollback",))

    assert result.returncode == 0, result.stderr
    assert f"rolling back to {A}" in result.stdout and "migrating with" not in result.stdout
    assert not failures(recorder), (recorder.summary(), users.refusals)
    assert users.verify_writes() == []
    assert site.settled_releases(2) == [A, A]
    history = (site.path / "releases.log").read_text().split("\n")
    assert [line.split()[1:] for line in history if line] == [[A, "deploy"], [B, "deploy"], [A, "rollback"]]


def test_secrets_appear_in_no_inspect_environment_or_log(site, users):
    values = [(site.path / "secrets" / name).read_text().strip() for name in SECRET_NAMES]
    passwords = [value for value in values if "://" not in value]  # the URLs embed the passwords
    services = ("web", "nginx", "db", "redis", "migrate")
    seen = [site.docker("service", "inspect", f"{STACK}_{service}") for service in services]
    for service in ("web", "db", "redis"):
        for container in site.containers(service):
            seen.append(site.docker("inspect", container))
            seen.append(site.docker("exec", container, "env"))
    # each container's log, the migration job's exited ones too (`docker service logs` can hang
    # on a job's finished tasks)
    for service in services:
        for container in site.containers(service, every=True):
            logs = site.engine.docker("logs", container, capture=True, timeout=60)
            seen.append((logs.stdout + logs.stderr).decode(errors="replace"))
    assert len(seen) > 2 * len(services)
    for value in passwords:
        assert not any(value in text for text in seen)
    # each secret is named after its content, never holding it
    names = site.docker("secret", "ls", "--format", "{{.Name}}").split()
    assert sorted(name.rsplit("_", 1)[0] for name in names) == sorted(f"{STACK}_{name}" for name in SECRET_NAMES)


def test_a_rotated_secret_rolls_web_on_the_same_release_and_deploy_waits_for_it(site, users):
    """docs/scaling.md: a new secret value is a new file in SECRETS_DIR, and the next deploy rolls
    web onto it, on the same release too. Here DATABASE_URL names the database as before, with a
    setting the app makes anyway, so nothing else changes: deploy A (which runs) must still roll
    both tasks and return only once that update has completed. Then it removes the stack's
    secrets that no service names (one left from a rotation long ago), and no other one."""
    url_file = site.path / "secrets" / "database_url"
    replaced = content_secret("database_url", url_file)
    url_file.write_text(url_file.read_text().strip() + "?application_name=flask-kit\n")
    rotated = content_secret("database_url", url_file)
    # an older value's secret, which no service names any more, and another stack's
    for stale in (f"{STACK}_database_url_000000000000", "other_database_url_000000000000"):
        site.engine.docker("secret", "create", "--label", "flask-kit.secret=database_url", stale, str(url_file),
                           capture=True)

    def deploy_and_look():
        result = site.swarm("deploy", A)
        # what Swarm says the moment deploy returns, not after the load's tail
        return result, site.docker("service", "inspect", "--format", "{{.UpdateStatus.State}}", f"{STACK}_web").strip()

    ((result, state),), recorder = switches_under_load(users, [deploy_and_look], rate=RATE)
    print(f"load: {recorder.summary()}")

    assert result.returncode == 0, result.stderr
    assert f"created secret {rotated}" in result.stdout and "updating web to" in result.stdout
    assert state == "completed"
    assert not failures(recorder), (recorder.summary(), users.refusals)
    assert users.verify_writes() == []
    assert site.settled_releases(2) == [A, A]
    tasks = site.docker("service", "ps", "--quiet", "--filter", "desired-state=running", f"{STACK}_web").split()
    mounted = [site.docker("inspect", "--format", "{{range .Spec.ContainerSpec.Secrets}}{{.SecretName}} {{end}}",
                           task).split() for task in tasks]
    assert len(mounted) == 2 and all(rotated in names for names in mounted), mounted
    assert f"removed secret {STACK}_database_url_000000000000" in result.stdout
    secrets = site.docker("secret", "ls", "--format", "{{.Name}}").split()
    assert sorted(name for name in secrets if "database_url" in name) == sorted(
        [replaced, rotated, "other_database_url_000000000000"])  # the replaced one, for Swarm's rollback
