"""Static checks of the deployment files: linters, and the Compose model as Compose itself
resolves it (`docker compose config`, no engine needed). Fast: no containers start."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from app.config import load_config
from harness import REPO, VENV_BIN

DEV = REPO / "docker-compose.yml"
PROD = REPO / "docker-compose.prod.yml"
SECRETS = REPO / "docker-compose.secrets.yml"
GUNICORN_GRACEFUL_TIMEOUT = 30

# Every variable production refuses to start without, with a sample value.
PROD_REQUIRED = {
    "REGISTRY": "registry.example.com/acme",
    "TAG": "0123456789abcdef0123456789abcdef01234567",
    "SECRET_KEY": "4f1c0d9a8e7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b",
    "POSTGRES_PASSWORD": "9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f",
    "REDIS_PASSWORD": "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d",
    "DOMAIN": "app.example.com",
}
# Variables the Compose files read; cleared so the developer's shell cannot leak in.
COMPOSE_VARIABLES = {*PROD_REQUIRED, "WEB_IMAGE", "BASE_IMAGE", "WHEELHOUSE", "GIT_SHA", "POSTGRES_IMAGE",
                     "REDIS_IMAGE", "NGINX_IMAGE", "CERTBOT_IMAGE", "HTTP_PORT", "HTTPS_PORT", "LOG_LEVEL",
                     "NGINX_SERVER_NAME", "SENTRY_DSN", "WEB_REPLICAS", "NGINX_API_RATE", "NGINX_API_BURST",
                     "NGINX_CONN_LIMIT", "NGINX_TRUSTED_PROXIES", "SECRETS_DIR", "APP_ENV_FILE", "WEB_CONCURRENCY",
                     "WEB_CPUS", "REDIS_MAXMEMORY", "RESTIC_REPOSITORY", "RESTIC_PASSWORD", "BACKUP_INTERVAL_SECONDS",
                     "BACKUP_MAX_AGE_SECONDS", "PROMETHEUS_IMAGE", "PROMETHEUS_RETENTION", "NGINX_EXPORTER_IMAGE",
                     "BLACKBOX_EXPORTER_IMAGE", "NODE_EXPORTER_IMAGE"}
# The secrets a deploy gives as plain variables or, with docker-compose.secrets.yml, as files.
SECRET_VARIABLES = ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD")


def tool(name: str) -> str:
    path = VENV_BIN / name
    assert path.exists(), f"{path} is missing: reinstall requirements-dev.txt into the venv"
    return str(path)


def compose_config(*files: Path, env: dict[str, str] | None = None, profile: str | None = None
                   ) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in COMPOSE_VARIABLES and not k.startswith(("COMPOSE_", "DOCKER_"))}
    args = [tool("docker-compose")]
    for file in files:
        args += ["--file", str(file)]
    if profile:
        args += ["--profile", profile]
    # --env-file /dev/null: a developer's .env must not change what is checked.
    args += ["--env-file", os.devnull, "config", "--format", "json"]
    return subprocess.run(args, env={**clean, **(env or {})}, cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def model(*files: Path, env: dict[str, str] | None = None, profile: str | None = None) -> dict:
    result = compose_config(*files, env=env, profile=profile)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def shell_scripts() -> list[Path]:
    skip = {".git", ".venv", "build", "node_modules"}
    found = {p for p in REPO.rglob("*.sh") if not skip & set(p.relative_to(REPO).parts)}
    found |= {p for p in (REPO / "scripts").iterdir() if p.is_file()}
    return sorted(found)


# --- linters ------------------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", ["Dockerfile", "nginx/Dockerfile", "backup/Dockerfile"])
def test_dockerfiles_pass_hadolint(dockerfile):
    result = subprocess.run([tool("hadolint"), dockerfile], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(REPO)))
def test_shell_script_passes_shellcheck(script):
    result = subprocess.run([tool("shellcheck"), str(script)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_pass_actionlint():
    workflows = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
    assert workflows, "the CI pipeline lives in .github/workflows"
    result = subprocess.run([tool("actionlint"), *map(str, workflows)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Dockerfile ---------------------------------------------------------------------------

DOCKERFILE = (REPO / "Dockerfile").read_text()
INSTRUCTIONS = "\n".join(ln for ln in DOCKERFILE.splitlines() if not ln.lstrip().startswith("#"))


def test_dockerfile_works_with_the_classic_builder():
    assert not re.search(r"^#\s*syntax=", DOCKERFILE, re.M), "no # syntax= line: BuildKit is not available"
    assert "--mount" not in INSTRUCTIONS
    assert "<<" not in INSTRUCTIONS, "no heredocs"


def test_dockerfile_pins_the_base_and_runs_as_uid_10001():
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11\.\d+-slim-bookworm$", DOCKERFILE, re.M)
    assert re.search(r"^USER 10001:10001$", DOCKERFILE, re.M)
    assert ('CMD ["python", "-m", "gevent.monkey", "--module", "gunicorn", "--config", "gunicorn.conf.py", '
            '"wsgi:app"]') in DOCKERFILE
    assert re.search(r"^ENTRYPOINT \[", DOCKERFILE, re.M), "exec form, so gunicorn gets SIGTERM"
    assert "--require-hashes" in DOCKERFILE


def test_dockerignore_allows_only_what_the_image_needs():
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "allow-list: everything else (.env*, .git, tests, .venv, docs) stays out"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == {"app", "migrations", "wsgi.py", "gunicorn.conf.py", "requirements.txt",
                       "scripts/docker-entrypoint.sh", "build/wheels", "nginx",
                       "scripts/backup.sh", "scripts/restore.sh", "scripts/backup-schedule.sh",
                       *RELEASE_SOURCES}
    assert "**/.env*" in lines


# What the web image carries in /release for the server, and where each file comes from.
RELEASE_SOURCES = ("docker-compose.yml", "docker-compose.prod.yml", "docker-compose.secrets.yml",
                   "scripts/deploy.sh", "scripts/renew-certificates.sh", "scripts/make-secrets.sh")


def test_the_web_image_carries_every_server_file_the_deploy_key_installs():
    """scripts/deploy-command.sh installs RELEASE_FILES from the image's /release; the Dockerfile
    must put exactly those there, and never the forced command itself."""
    copied = [word for line in (REPO / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ") and line.rstrip().endswith(" /release/") for word in line.split()[1:-1]]
    installed = re.search(r"RELEASE_FILES=\(([^)]*)\)", (REPO / "scripts" / "deploy-command.sh").read_text())
    assert sorted(copied) == sorted(RELEASE_SOURCES)
    assert sorted(Path(source).name for source in copied) == sorted(installed.group(1).split())
    assert "deploy-command.sh" not in installed.group(1)


# --- docker-compose.yml (development) -----------------------------------------------------

def test_dev_compose_is_valid_with_no_env_at_all():
    result = compose_config(DEV)
    assert result.returncode == 0, result.stderr


def test_dev_publishes_only_nginx_and_only_on_loopback():
    services = model(DEV)["services"]
    published = {name: svc.get("ports", []) for name, svc in services.items() if svc.get("ports")}
    assert set(published) == {"nginx"}
    assert {(p["host_ip"], p["target"]) for p in published["nginx"]} == {("127.0.0.1", 80), ("127.0.0.1", 443)}


def test_dev_web_waits_for_migrate_and_healthy_servers():
    services = model(DEV)["services"]
    depends = services["web"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["db"]["condition"] == depends["redis"]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"]["web"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["flask", "--app", "wsgi", "db", "upgrade"]
    assert services["migrate"]["image"] == services["web"]["image"]
    for name in ("db", "redis", "web", "nginx"):
        assert not services[name]["healthcheck"].get("disable"), name


def test_dev_stop_grace_outlasts_gunicorns_graceful_timeout():
    web = model(DEV)["services"]["web"]
    assert web["environment"]["GUNICORN_GRACEFUL_TIMEOUT"] == str(GUNICORN_GRACEFUL_TIMEOUT)
    seconds = int(re.fullmatch(r"(\d+)s", web["stop_grace_period"]).group(1))
    assert seconds > GUNICORN_GRACEFUL_TIMEOUT


def test_dev_images_are_overridable():
    env = {"WEB_IMAGE": "w:1", "POSTGRES_IMAGE": "p:1", "REDIS_IMAGE": "r:1", "NGINX_IMAGE": "n:1",
           "BASE_IMAGE": "b:1", "WHEELHOUSE": "build/wheels", "GIT_SHA": "abc"}
    services = model(DEV, env=env)["services"]
    assert [services[s]["image"] for s in ("web", "migrate", "db", "redis", "nginx")] == \
        ["w:1", "w:1", "p:1", "r:1", "n:1"]
    assert services["web"]["build"]["args"] == {"BASE_IMAGE": "b:1", "WHEELHOUSE": "build/wheels", "GIT_SHA": "abc"}


# --- docker-compose.prod.yml --------------------------------------------------------------

def test_prod_is_valid_with_the_required_variables():
    result = compose_config(DEV, PROD, env=PROD_REQUIRED)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(PROD_REQUIRED))
def test_prod_refuses_to_start_without_a_required_variable(missing):
    env = {k: v for k, v in PROD_REQUIRED.items() if k != missing}
    result = compose_config(DEV, PROD, env=env)
    assert result.returncode != 0
    if missing in SECRET_VARIABLES:  # either a variable or a file: the message names both
        assert f"set {missing} (" in result.stderr and "or SECRETS_DIR" in result.stderr, result.stderr
    else:
        assert f"required variable {missing} is missing a value" in result.stderr


DIGESTS = {f"{name}_DIGEST": f"sha256:{digit * 64}" for name, digit in (("WEB", "a"), ("NGINX", "b"), ("BACKUP", "c"))}


def test_prod_runs_the_exact_registry_image_and_never_builds():
    services = model(DEV, PROD, env=PROD_REQUIRED)["services"]
    expected = f"{PROD_REQUIRED['REGISTRY']}/flask-kit-web:sha-{PROD_REQUIRED['TAG']}"
    pinned = model(DEV, PROD, env={**PROD_REQUIRED, **DIGESTS})["services"]
    for name in ("web", "migrate"):
        assert services[name]["image"] == expected  # no digest recorded: the tag
        assert pinned[name]["image"] == f"{expected}@{DIGESTS['WEB_DIGEST']}"
        assert "build" not in services[name]
        env = services[name]["environment"]
        assert env["APP_ENV"] == "production"
        assert env["SECRET_KEY"] == PROD_REQUIRED["SECRET_KEY"]
        assert PROD_REQUIRED["POSTGRES_PASSWORD"] in env["DATABASE_URL"]
        assert PROD_REQUIRED["REDIS_PASSWORD"] in env["REDIS_URL"]
    assert services["migrate"]["restart"] == "no"


def test_prod_runs_both_release_images_and_no_source_from_the_host():
    services = model(DEV, PROD, env=PROD_REQUIRED)["services"]
    release = f"{PROD_REQUIRED['REGISTRY']}/flask-kit-nginx:sha-{PROD_REQUIRED['TAG']}"
    assert services["nginx"]["image"] == release
    # only named volumes: a server holds the Compose files, .env and the history, no checkout
    assert {volume["type"] for name in ("nginx", "web") for volume in services[name].get("volumes", [])} <= {"volume"}
    assert "/etc/nginx/upstream.d" in services["nginx"]["tmpfs"]


def test_the_deploy_guides_release_is_every_image_the_server_pulls():
    """docs/deploy.md §1 builds and pushes a release with scripts/build-release.sh; deploy.sh
    refuses one that lacks an image it pulls. Both must name the same images, each from a
    Dockerfile that exists."""
    guide = (REPO / "docs" / "deploy.md").read_text()
    section = guide[guide.index("**A release.**"):guide.index("## 2.")]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)
    assert re.search(r'^scripts/build-release\.sh "\$\(git rev-parse HEAD\)" --push$', block, re.M)
    script = (REPO / "scripts" / "build-release.sh").read_text()
    names = dict(re.findall(r"\[(\w+)\]=(flask-kit-[a-z]+)", script))
    dockerfiles = dict(re.findall(r"\[(\w+)\]=((?:[a-z]+/)?Dockerfile)\b", script))
    built = {name: dockerfiles[key] for key, name in names.items()}
    deploy = (REPO / "scripts" / "deploy.sh").read_text()
    pulled_services = re.search(r"compose pull --quiet ([a-z ]+)\|\|", deploy).group(1).split()
    services = model(DEV, PROD, env=PROD_REQUIRED)["services"]
    pulled = {services[name]["image"].split("/")[-1].split(":")[0] for name in pulled_services}

    assert set(built) == pulled == {"flask-kit-web", "flask-kit-nginx", "flask-kit-backup"}
    assert all((REPO / dockerfile).is_file() for dockerfile in built.values())


def test_prod_runs_two_web_replicas_unless_told_otherwise():
    assert model(DEV, PROD, env=PROD_REQUIRED)["services"]["web"]["deploy"]["replicas"] == 2
    scaled = model(DEV, PROD, env={**PROD_REQUIRED, "WEB_REPLICAS": "4"})
    assert scaled["services"]["web"]["deploy"]["replicas"] == 4


def test_prod_publishes_only_nginx_on_all_interfaces():
    services = model(DEV, PROD, env=PROD_REQUIRED)["services"]
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    assert set(published) == {"nginx"}
    assert {(p.get("host_ip"), p["target"], p["published"]) for p in published["nginx"]} == \
        {(None, 80, "80"), (None, 443, "443")}


def test_prod_keeps_the_redis_password_off_command_lines():
    redis = model(DEV, PROD, env=PROD_REQUIRED)["services"]["redis"]
    assert redis["environment"]["REDIS_PASSWORD"] == PROD_REQUIRED["REDIS_PASSWORD"]
    assert PROD_REQUIRED["REDIS_PASSWORD"] not in json.dumps([redis["entrypoint"], redis["command"]])
    assert "requirepass" in redis["entrypoint"][2]


@pytest.mark.parametrize("name", ["db", "redis", "migrate", "web", "nginx", "backup"])
def test_prod_hardens_every_long_running_service(name):
    svc = model(DEV, PROD, env=PROD_REQUIRED)["services"][name]
    assert svc["read_only"] is True
    assert svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert svc["logging"]["driver"] == "json-file"
    assert {"max-size", "max-file"} <= set(svc["logging"]["options"])
    assert svc["mem_limit"] and svc["cpus"] and svc["pids_limit"]
    assert svc["restart"] == ("no" if name == "migrate" else "unless-stopped")


def test_prod_adds_back_only_the_capabilities_nginx_needs():
    nginx = model(DEV, PROD, env=PROD_REQUIRED)["services"]["nginx"]
    assert set(nginx["cap_add"]) == {"CHOWN", "DAC_OVERRIDE", "SETUID", "SETGID", "NET_BIND_SERVICE"}
    assert model(DEV, PROD, env=PROD_REQUIRED)["services"]["web"].get("cap_add") is None


def test_prod_certbot_shares_the_webroot_with_nginx_and_is_a_tool():
    services = model(DEV, PROD, env=PROD_REQUIRED)["services"]
    certbot = services.get("certbot")
    # `config` lists profiled services only when their profile is active
    if certbot is None:
        result = subprocess.run(
            [tool("docker-compose"), "--file", str(DEV), "--file", str(PROD), "--env-file", os.devnull,
             "--profile", "tools", "config", "--format", "json"],
            env={**os.environ, **PROD_REQUIRED}, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        certbot = json.loads(result.stdout)["services"]["certbot"]
    assert certbot["profiles"] == ["tools"]
    webroot = {v["source"]: v for v in certbot["volumes"]}["certbot-webroot"]
    assert webroot["target"] == "/var/www/certbot"
    nginx_webroot = {v["source"]: v for v in services["nginx"]["volumes"] if v["type"] == "volume"}
    assert nginx_webroot["certbot-webroot"]["target"] == services["nginx"]["environment"]["NGINX_ACME_ROOT"]


def test_prod_runs_the_releases_backup_image_into_its_own_volume():
    backup = model(DEV, PROD, env=PROD_REQUIRED)["services"]["backup"]
    assert backup["image"] == f"{PROD_REQUIRED['REGISTRY']}/flask-kit-backup:sha-{PROD_REQUIRED['TAG']}"
    assert [(v["type"], v["source"], v["target"]) for v in backup["volumes"]] == \
        [("volume", "backups", "/backups"), ("volume", "backup-metrics", "/metrics")]
    assert PROD_REQUIRED["POSTGRES_PASSWORD"] in backup["environment"]["DATABASE_URL"]
    assert backup["environment"]["BACKUP_INTERVAL_SECONDS"] == "86400"
    assert "ports" not in backup


def test_prod_app_settings_reach_web_and_migrate_from_an_optional_file(tmp_path):
    settings = tmp_path / "app.env"
    settings.write_text("DB_POOL_SIZE=4\nLOGIN_FAILURES_PER_ACCOUNT=5\n# SECRET_KEY below loses to .env's\n"
                        "SECRET_KEY=from-the-file\n")
    services = model(DEV, PROD, env={**PROD_REQUIRED, "APP_ENV_FILE": str(settings)})["services"]
    for name in ("web", "migrate"):
        env = services[name]["environment"]
        assert env["DB_POOL_SIZE"] == "4" and env["LOGIN_FAILURES_PER_ACCOUNT"] == "5"
        assert env["SECRET_KEY"] == PROD_REQUIRED["SECRET_KEY"]
    # and the file may be absent
    assert "DB_POOL_SIZE" not in model(DEV, PROD, env=PROD_REQUIRED)["services"]["web"]["environment"]


def test_prod_sets_the_worker_count_next_to_the_cpu_quota():
    web = model(DEV, PROD, env=PROD_REQUIRED)["services"]["web"]
    assert (web["environment"]["WEB_CONCURRENCY"], web["cpus"]) == ("1", 1.0)
    bigger = model(DEV, PROD, env={**PROD_REQUIRED, "WEB_CONCURRENCY": "2", "WEB_CPUS": "2"})["services"]["web"]
    assert (bigger["environment"]["WEB_CONCURRENCY"], bigger["cpus"]) == ("2", 2.0)


def test_prod_defaults_fit_the_connection_budget():
    """Every worker's pool at once, with a release's replicas running beside the old ones, plus
    migrate and the backup, under Postgres's max_connections (the db runs its default)."""
    from app.capacity import ConnectionBudget
    from app.config import load_config

    services = model(DEV, PROD, env=PROD_REQUIRED)["services"]
    web = services["web"]
    config = load_config({**web["environment"], "APP_ENV": "testing"})
    assert "max_connections" not in json.dumps(services["db"].get("command", ""))
    budget = ConnectionBudget(workers=int(web["environment"]["WEB_CONCURRENCY"]), pool_size=config["DB_POOL_SIZE"],
                              max_overflow=config["DB_MAX_OVERFLOW"], replicas=2 * web["deploy"]["replicas"],
                              others=2, max_connections=100)

    assert budget.fits, budget.describe()


def test_prod_redis_evicts_expiring_keys_below_its_memory_limit():
    redis = model(DEV, PROD, env=PROD_REQUIRED)["services"]["redis"]
    script = redis["entrypoint"][2]
    assert "maxmemory-policy volatile-lru" in script
    maxmemory = redis["environment"]["REDIS_MAXMEMORY"]
    assert maxmemory.endswith("mb") and int(maxmemory[:-2]) * 2**20 < int(redis["mem_limit"])


def test_prod_with_docker_secrets_needs_no_secret_variable(tmp_path):
    env = {k: v for k, v in PROD_REQUIRED.items() if k not in SECRET_VARIABLES}
    services = model(DEV, PROD, SECRETS, env={**env, "SECRETS_DIR": str(tmp_path)})["services"]
    for name in ("web", "migrate"):
        app_env = services[name]["environment"]
        for variable in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL"):
            assert app_env[variable] == "" and app_env[f"{variable}_FILE"].startswith("/run/secrets/")
    assert services["db"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert services["redis"]["environment"]["REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
    assert services["backup"]["environment"]["DATABASE_URL_FILE"] == "/run/secrets/database_url"
    # without the directory, the secrets file names what is missing
    result = compose_config(DEV, PROD, SECRETS, env=env)
    assert result.returncode != 0 and "required variable SECRETS_DIR is missing" in result.stderr


# --- the monitoring profile ---------------------------------------------------------------

MONITORING = ("prometheus", "nginx-exporter", "blackbox-exporter")
PROMETHEUS_CONFIG = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())


def scrape_job(name: str) -> dict:
    (job,) = [job for job in PROMETHEUS_CONFIG["scrape_configs"] if job["job_name"] == name]
    return job


def test_monitoring_is_an_opt_in_profile():
    assert not set(MONITORING) & set(model(DEV)["services"])
    assert not {*MONITORING, "backup-exporter"} & set(model(DEV, PROD, env=PROD_REQUIRED)["services"])


def test_monitoring_publishes_nothing_new_in_either_file():
    for files, env, nginx_ports in (((DEV,), {}, {("127.0.0.1", 80), ("127.0.0.1", 443)}),
                                    ((DEV, PROD), PROD_REQUIRED, {(None, 80), (None, 443)})):
        services = model(*files, env=env, profile="monitoring")["services"]
        assert set(MONITORING) <= set(services)
        published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
        assert set(published) == {"nginx"}
        assert {(p.get("host_ip"), p["target"]) for p in published["nginx"]} == nginx_ports


def test_prometheus_reads_the_repos_config_and_scrapes_the_ports_compose_serves():
    services = model(DEV, profile="monitoring")["services"]
    mounts = {v["target"]: v for v in services["prometheus"]["volumes"]}
    assert Path(mounts["/etc/prometheus"]["source"]) == REPO / "deploy" / "prometheus"
    assert mounts["/etc/prometheus"]["read_only"] is True
    web = scrape_job("web")["dns_sd_configs"][0]
    assert web["names"] == ["web"] and web["port"] == load_config({"APP_ENV": "testing", "DATABASE_URL": "sqlite://"}
                                                                  )["METRICS_PORT"]
    status_port = services["nginx"]["environment"]["NGINX_STATUS_PORT"]
    assert services["nginx-exporter"]["command"] == [f"--nginx.scrape-uri=http://nginx:{status_port}/stub_status"]
    assert scrape_job("nginx")["static_configs"][0]["targets"] == ["nginx-exporter:9113"]


def test_prod_backup_reports_its_health_and_the_age_prometheus_reads():
    services = model(DEV, PROD, env=PROD_REQUIRED, profile="monitoring")["services"]
    backup, exporter = services["backup"], services["backup-exporter"]
    assert backup["healthcheck"]["test"] == ["CMD", "backup-schedule.sh", "--check"]
    metrics_file = Path(backup["environment"]["BACKUP_METRICS_FILE"])
    written = {v["source"]: v["target"] for v in backup["volumes"]}
    read = {v["source"]: v for v in exporter["volumes"]}
    assert Path(written["backup-metrics"]) == metrics_file.parent
    assert read["backup-metrics"]["read_only"] is True
    assert f"--collector.textfile.directory={read['backup-metrics']['target']}" in exporter["command"]
    assert scrape_job("backup")["dns_sd_configs"][0]["names"] == ["backup-exporter"]
