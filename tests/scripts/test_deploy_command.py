"""scripts/deploy-command.sh, the forced command that is all CI's deploy key may run, and
scripts/deploy-over-ssh.sh and the workflow's deploy job, CI's side of it: over Debian's real
sshd on a loopback port, with the authorized_keys line the script prints. Docker and deploy.sh
are stubs that record their calls; what deploy.sh does to a running stack is tested in
tests/docker/test_releases.py."""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import REPO
from harness.process import free_port, port_open, stop_process
from harness.servers import SshServer
from harness.wait import wait_for, wait_for_line
from harness.workflow import clone_for_act, log_excerpt, run_workflow

COMMAND = REPO / "scripts" / "deploy-command.sh"
OVER_SSH = REPO / "scripts" / "deploy-over-ssh.sh"
SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER_SHA = "f" * 40
WEB, NGINX, BACKUP = (f"sha256:{digit * 64}" for digit in "abc")
REGISTRY = "127.0.0.1:5000"
CONTAINER = "c0ffee"
RELEASE_FILES = ("docker-compose.yml", "docker-compose.prod.yml", "docker-compose.secrets.yml",
                 "deploy.sh", "renew-certificates.sh", "make-secrets.sh")
ALLOWED = "; allowed: deploy <sha> <web-digest> <nginx-digest> <backup-digest> | rollback [<sha>] | status"
# deploy.sh, as installed on the server and as a release carries it: which one ran, with what
RECORDING_DEPLOY = '#!/bin/sh\necho "{label} $*" >> {calls}\n'
# docker: each call a line; `image inspect` answers the revision the test wrote, `cp` copies
# the fake /release (and fails, as docker does, when there is none).
DOCKER = """#!/usr/bin/env bash
echo "$*" >> {calls}
case "$1" in
  pull | rm) ;;
  image) cat {revision} ;;
  create) echo {container} ;;
  cp) cp -a {release}/. "$3" ;;
  *) exit 1 ;;
esac
"""


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def make_key(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci@test", "-f", str(path)],
                   check=True, timeout=30)
    return path


def authorized_key(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(COMMAND), "--authorized-key", *args], capture_output=True, text=True, timeout=30)


@dataclass
class Server:
    """The deploy directory behind a real sshd, and the client's key and known_hosts for it."""

    sshd: SshServer
    path: Path
    key: Path
    known_hosts: Path
    release: Path
    revision: Path
    docker_log: Path
    deploy_log: Path

    def options(self) -> list[str]:
        """ssh's and scp's: this key alone, this host key alone, no config file, no prompt."""
        return ["-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "IdentitiesOnly=yes", "-i", str(self.key)]

    def ssh_command(self, *args: str) -> list[str]:
        return ["ssh", *self.options(), "-p", str(self.sshd.port), *args]

    def ssh(self, *words: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.ssh_command("root@127.0.0.1", *words), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)

    def docker_calls(self) -> list[str]:
        return lines(self.docker_log)

    def deploy_calls(self) -> list[str]:
        return lines(self.deploy_log)


@pytest.fixture
def server(tmp_path):
    """A deploy directory as the admin leaves it (deploy-command.sh, .env, deploy.sh), a fake
    release image with the six server files and a deploy-command.sh of its own, and sshd
    holding the key's restricted line, as `--authorized-key` prints it."""
    path = tmp_path / "srv"
    path.mkdir()
    shutil.copy2(COMMAND, path / "deploy-command.sh")
    (path / ".env").write_text(f"REGISTRY={REGISTRY}\nTAG={OTHER_SHA}\n")
    deploy_log = tmp_path / "deploy-calls.log"
    executable(path / "deploy.sh", RECORDING_DEPLOY.format(label="installed", calls=deploy_log))

    release = tmp_path / "release"
    for name in RELEASE_FILES:
        executable(release / name, f"# {name} of the release\n")
    executable(release / "deploy.sh", RECORDING_DEPLOY.format(label="released", calls=deploy_log))
    executable(release / "deploy-command.sh", "#!/bin/sh\nexec /bin/sh\n")
    revision = tmp_path / "revision"
    revision.write_text(SHA)
    docker_log = tmp_path / "docker-calls.log"
    docker = executable(tmp_path / "bin" / "docker", DOCKER.format(
        calls=docker_log, revision=revision, container=CONTAINER, release=release))

    key = make_key(tmp_path / "ci_deploy")
    printed = authorized_key(f"{key}.pub", str(path))
    assert printed.returncode == 0, printed.stderr
    sshd = SshServer(tmp_path / "sshd", printed.stdout, {"DOCKER": str(docker)})
    sshd.start()
    try:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(sshd.known_hosts_line() + "\n")
        yield Server(sshd, path, key, known_hosts, release, revision, docker_log, deploy_log)
    finally:
        sshd.stop()


def refusal(result: subprocess.CompletedProcess) -> str:
    """The one line deploy-command.sh wrote (ssh may add its own, about a pty)."""
    ours = [line for line in result.stderr.splitlines() if line.startswith("deploy-command:")]
    assert len(ours) == 1, result.stderr
    return ours[0]


@pytest.mark.slow
@pytest.mark.parametrize("command, why", [
    (None, "no command (this key gets no shell)"),
    ("id", "id is not an allowed command"),
    ("cat /etc/passwd", r"cat\ /etc/passwd is not an allowed command"),
    ("bash -i", "is not an allowed command"),
    ("deploy {sha};touch${{IFS}}{marker} {web} {nginx} {backup}", "is not a commit SHA"),
    ("deploy {sha};touch {marker}", "deploy takes 4 arguments, got 2"),
    ("deploy '$(touch {marker})' {web} {nginx} {backup}", "deploy takes 4 arguments, got 5"),
    ("deploy $(touch${{IFS}}{marker}) {web} {nginx} {backup}", r"\$\(touch\$\{IFS\}"),
    ("deploy `touch {marker}` {web} {nginx} {backup}", "deploy takes 4 arguments, got 5"),
    ("status\ntouch {marker}", "holds a control character"),
    ("deploy {upper} {web} {nginx} {backup}", "is not a commit SHA (40 lowercase hex digits)"),
    ("deploy {short} {web} {nginx} {backup}", "0123456 is not a commit SHA"),
    ("deploy {sha} sha512:{long} {nginx} {backup}", "is not an image digest"),
    ("deploy {sha} latest {nginx} {backup}", "latest is not an image digest"),
    ("deploy {sha} {web} {nginx}", "deploy takes 4 arguments, got 3"),
    ("deploy {sha} {web} {nginx} {backup} --force", "deploy takes 4 arguments, got 5"),
    ("rollback main", "main is not a commit SHA"),
    ("rollback {sha} {sha}", "rollback takes at most 1 argument, got 2"),
    ("status --verbose", "status takes no argument"),
    ("scale 9", "is not an allowed command"),
], ids=lambda value: re.sub(r"\W+", "-", str(value))[:40])
def test_anything_but_the_three_commands_is_refused_and_runs_nothing(server, tmp_path, command, why):
    marker = tmp_path / "marker"
    words = [] if command is None else [command.format(
        sha=SHA, web=WEB, nginx=NGINX, backup=BACKUP, marker=marker, upper=SHA.upper(), short=SHA[:7],
        long="a" * 128)]

    result = server.ssh(*words)

    assert result.returncode == 2, result.stderr
    line = refusal(result)
    assert line.startswith("deploy-command: refused: ") and line.endswith(ALLOWED), line
    assert why in line
    assert "$(touch" not in line  # the client's words are printed quoted, never raw
    assert result.stdout == ""
    assert not marker.exists()
    assert server.docker_calls() == [] and server.deploy_calls() == []


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [[], ["-O"]], ids=["sftp", "scp"])
def test_the_key_copies_no_file(server, tmp_path, protocol):
    """scp speaks SFTP (a subsystem) or, with -O, runs `scp -t` (a command): the forced command
    runs instead of either, and refuses it."""
    (tmp_path / "payload").write_text("#!/bin/sh\n")

    result = subprocess.run(["scp", *protocol, *server.options(), "-P", str(server.sshd.port),
                             str(tmp_path / "payload"), f"root@127.0.0.1:{server.path}/deploy.sh"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert "installed" in (server.path / "deploy.sh").read_text()
    assert server.docker_calls() == [] and server.deploy_calls() == []


@pytest.mark.slow
def test_the_key_opens_no_local_forward(server, tmp_path):
    """ssh listens locally either way; the forward fails when a connection asks for it: sshd
    refuses the channel, so sshd's own banner never comes through."""
    local = free_port()
    log = tmp_path / "forward.log"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            server.ssh_command("-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:127.0.0.1:{server.sshd.port}",
                               "root@127.0.0.1"),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for(lambda: proc.poll() is not None or port_open(local), 15, "ssh listening for the forward")
        assert proc.poll() is None, log.read_text()
        with socket.create_connection(("127.0.0.1", local), timeout=5) as connection:
            connection.settimeout(10)
            assert connection.recv(64) == b""
        wait_for_line(log, "open failed: administratively prohibited", 15)
    finally:
        stop_process(proc)
    assert server.docker_calls() == [] and server.deploy_calls() == []


@pytest.mark.slow
def test_the_key_opens_no_remote_forward(server):
    result = subprocess.run(
        server.ssh_command("-N", "-o", "ExitOnForwardFailure=yes", "-R", f"{free_port()}:127.0.0.1:{server.sshd.port}",
                           "root@127.0.0.1"),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)

    assert result.returncode == 255
    assert "remote port forwarding failed" in result.stderr


@pytest.mark.slow
def test_deploy_installs_the_releases_files_then_runs_its_deploy_sh(server):
    result = server.ssh("deploy", SHA, WEB, NGINX, BACKUP)

    assert result.returncode == 0, result.stderr
    assert f"deploy-command: accepted from 127.0.0.1: deploy {SHA} {WEB} {NGINX} {BACKUP}" in result.stderr
    image = f"{REGISTRY}/flask-kit-web@{WEB}"
    pull, inspect, create, copy, remove = server.docker_calls()
    assert pull == f"pull --quiet {image}"
    assert inspect == f'image inspect --format {{{{index .Config.Labels "org.opencontainers.image.revision"}}}} {image}'
    assert create == f"create {image}"
    assert re.fullmatch(rf"cp {CONTAINER}:/release/\. {re.escape(str(server.path))}/\.release\.\w+", copy), copy
    assert remove == f"rm {CONTAINER}"
    # the release's own deploy.sh ran: the files were in place first
    assert server.deploy_calls() == [f"released deploy {SHA} {WEB} {NGINX} {BACKUP}"]
    for name in RELEASE_FILES:
        assert (server.path / name).read_bytes() == (server.release / name).read_bytes(), name
    assert (server.path / "deploy-command.sh").read_bytes() == COMMAND.read_bytes()
    assert not list(server.path.glob(".release.*"))
    assert (server.path / ".deploy.lock").read_text() == ""  # released, for deploy.sh to take


@pytest.mark.slow
def test_deploy_refuses_a_digest_built_from_another_commit(server):
    server.revision.write_text(OTHER_SHA)

    result = server.ssh("deploy", SHA, WEB, NGINX, BACKUP)

    assert result.returncode == 1
    assert (f"deploy-command: error: {WEB} was built from {OTHER_SHA}, not {SHA}: the digest is not that "
            f"commit's; fix: pass the digests CI pushed for {SHA}") in result.stderr
    assert [call.split()[0] for call in server.docker_calls()] == ["pull", "image"]
    assert server.deploy_calls() == []
    assert not (server.path / "docker-compose.yml").exists()
    assert (server.path / ".deploy.lock").read_text() == ""


@pytest.mark.slow
def test_deploy_installs_nothing_from_a_release_that_lacks_a_file(server):
    (server.release / "make-secrets.sh").unlink()
    (server.release / "docker-compose.secrets.yml").unlink()

    result = server.ssh("deploy", SHA, WEB, NGINX, BACKUP)

    assert result.returncode == 1
    assert "lacks docker-compose.secrets.yml make-secrets.sh in /release" in result.stderr
    assert server.docker_calls()[-1] == f"rm {CONTAINER}"
    assert server.deploy_calls() == []
    assert not (server.path / "docker-compose.yml").exists()
    assert not list(server.path.glob(".release.*"))


@pytest.mark.slow
def test_deploy_removes_the_container_when_the_copy_fails(server):
    shutil.rmtree(server.release)

    result = server.ssh("deploy", SHA, WEB, NGINX, BACKUP)

    assert result.returncode == 1
    assert "the release files could not be copied out of" in result.stderr
    assert [call.split()[0] for call in server.docker_calls()] == ["pull", "image", "create", "cp", "rm"]
    assert server.deploy_calls() == []
    assert not list(server.path.glob(".release.*"))


@pytest.mark.slow
def test_deploy_needs_the_registry_in_env(server):
    (server.path / ".env").write_text(f"TAG={OTHER_SHA}\n")

    result = server.ssh("deploy", SHA, WEB, NGINX, BACKUP)

    assert result.returncode == 1
    assert "no REGISTRY= line in" in result.stderr and "fix: add one" in result.stderr
    assert server.docker_calls() == [] and server.deploy_calls() == []


@pytest.mark.slow
def test_deploy_replaces_no_file_while_another_deploy_holds_the_lock(server):
    with open(server.path / ".deploy.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("pid 4242 (admin) since 12:00:00Z: deploy\n")
        lock.flush()
        result = server.ssh("deploy", SHA, WEB, NGINX, BACKUP)

    assert result.returncode == 1
    assert "another deploy holds the lock; fix: wait for it: pid 4242 (admin)" in result.stderr
    assert server.docker_calls() == [] and server.deploy_calls() == []


@pytest.mark.slow
@pytest.mark.parametrize("words", [["rollback"], ["rollback", SHA], ["status"]], ids=" ".join)
def test_rollback_and_status_reach_deploy_sh_as_they_are(server, words):
    result = server.ssh(*words)

    assert result.returncode == 0, result.stderr
    assert server.deploy_calls() == [" ".join(["installed", *words])]
    assert server.docker_calls() == []


def test_authorized_key_prints_the_restricted_line(tmp_path):
    key = make_key(tmp_path / "ci_deploy")
    public = Path(f"{key}.pub").read_text().strip()

    default, elsewhere = authorized_key(f"{key}.pub"), authorized_key(f"{key}.pub", "/opt/kit/")

    assert default.returncode == 0 and elsewhere.returncode == 0, default.stderr + elsewhere.stderr
    assert default.stdout == f'restrict,command="/srv/flask-kit/deploy-command.sh" {public}\n'
    assert elsewhere.stdout == f'restrict,command="/opt/kit/deploy-command.sh" {public}\n'


@pytest.mark.parametrize("key, directory, message", [
    ("missing.pub", "/srv/flask-kit", "is not a readable file"),
    ("ci_deploy", "/srv/flask-kit", "is not one public key line"),
    ("two.pub", "/srv/flask-kit", "is not one public key line"),
    ("empty.pub", "/srv/flask-kit", "is not one public key line"),
    ("restricted.pub", "/srv/flask-kit", "is not one public key line"),
    ("ci_deploy.pub", "srv/flask-kit", "is not a plain absolute directory"),
    ("ci_deploy.pub", "/srv/flask kit", "is not a plain absolute directory"),
    ("ci_deploy.pub", '/srv/x" ssh-ed25519', "is not a plain absolute directory"),
    ("ci_deploy.pub", "/srv/$(id)", "is not a plain absolute directory"),
])
def test_authorized_key_refuses_what_would_not_be_one_restricted_key(tmp_path, key, directory, message):
    public = Path(f"{make_key(tmp_path / 'ci_deploy')}.pub").read_text()
    (tmp_path / "two.pub").write_text(public * 2)
    (tmp_path / "restricted.pub").write_text(f"restrict {public}")
    (tmp_path / "empty.pub").write_text("\n")

    result = authorized_key(str(tmp_path / key), directory)

    assert result.returncode == 1
    assert message in result.stderr and "; fix: " in result.stderr
    assert result.stdout == ""


def test_without_arguments_outside_sshd_it_prints_its_usage():
    env = {name: value for name, value in os.environ.items() if name != "SSH_CONNECTION"}

    result = subprocess.run([str(COMMAND)], env=env, capture_output=True, text=True, timeout=30)

    assert result.returncode == 2
    assert "Usage: scripts/deploy-command.sh --authorized-key <public-key-file> [<deploy dir>]" in result.stderr


def over_ssh(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(OVER_SSH), *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def stub_ssh(tmp_path):
    """An ssh first on PATH that records its arguments, one a line."""
    log = tmp_path / "ssh-args.log"
    executable(tmp_path / "stub-bin" / "ssh", f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {log}\n")
    env = {"PATH": f"{tmp_path / 'stub-bin'}:{os.environ['PATH']}", "DEPLOY_HOST": "deploy.example.com",
           "DEPLOY_USER": "deploy", "DEPLOY_SSH_KEY_FILE": "/ci/key", "DEPLOY_KNOWN_HOSTS_FILE": "/ci/known_hosts"}
    return env, log


@pytest.mark.parametrize("args", [
    [],
    ["shell"],
    ["deploy", SHA[:7], WEB, NGINX, BACKUP],
    ["deploy", SHA.upper(), WEB, NGINX, BACKUP],
    ["deploy", f"{SHA};id", WEB, NGINX, BACKUP],
    ["deploy", SHA, f"sha512:{'a' * 128}", NGINX, BACKUP],
    ["deploy", SHA, WEB, NGINX, BACKUP[:-1]],
    ["deploy", SHA, WEB, NGINX],
    ["deploy", SHA],
    ["rollback", "main"],
    ["rollback", SHA, SHA],
    ["status", "--verbose"],
], ids=lambda args: re.sub(r"\W+", "-", " ".join(args))[:40] or "none")
def test_deploy_over_ssh_refuses_a_bad_command_before_connecting(stub_ssh, args):
    env, log = stub_ssh

    result = over_ssh(*args, env=env)

    assert result.returncode == 2
    assert "Usage: scripts/deploy-over-ssh.sh deploy <sha> <web-digest>" in result.stderr
    assert not log.exists()


def test_deploy_over_ssh_runs_only_ssh_with_the_command_words(stub_ssh):
    env, log = stub_ssh

    result = over_ssh("deploy", SHA, WEB, NGINX, BACKUP, env={**env, "DEPLOY_PORT": "2222"})

    assert result.returncode == 0, result.stderr
    assert lines(log) == ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                          "-o", "UserKnownHostsFile=/ci/known_hosts", "-o", "IdentitiesOnly=yes",
                          "-o", "ClearAllForwardings=yes", "-T", "-i", "/ci/key", "-p", "2222",
                          "deploy@deploy.example.com", "deploy", SHA, WEB, NGINX, BACKUP]


@pytest.mark.slow
def test_deploy_over_ssh_asks_the_status_through_the_forced_command(server):
    env = {"PATH": os.environ["PATH"], "DEPLOY_HOST": "127.0.0.1", "DEPLOY_PORT": str(server.sshd.port),
           "DEPLOY_USER": "root", "DEPLOY_SSH_KEY_FILE": str(server.key),
           "DEPLOY_KNOWN_HOSTS_FILE": str(server.known_hosts)}

    result = over_ssh("status", env=env)

    assert result.returncode == 0, result.stderr
    assert result.stderr == "deploy-command: accepted from 127.0.0.1: status\n"
    assert server.deploy_calls() == ["installed status"]


# deploy.sh as the release carries it, for the workflow's deploy job: it records its call,
# prints the schema lines the job keeps, and a deploy exits with the status the test wrote.
DEPLOY_AS_TOLD = """#!/bin/sh
echo "released $*" >> {calls}
if [ "$1" = deploy ]; then
  echo "deploy: schema revision before: 0007"
  echo "deploy: schema revision after: 0008"
  exit "$(cat {status})"
fi
"""


class Site(http.server.ThreadingHTTPServer):
    """$DEPLOY_URL on loopback: /health/ready answers 200 from `release`, as the server's nginx
    would once that release is live."""

    release = ""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            found = self.path == "/health/ready"
            body = json.dumps({"status": "pass", "releaseId": self.server.release} if found else {}).encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/health+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass


@pytest.fixture
def site():
    served = Site(("127.0.0.1", 0), Site.Handler)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.shutdown()
        served.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def ci_checkout(tmp_path_factory):
    """A clone of this commit, as the workflow's checkout step gets it."""
    return clone_for_act(REPO, tmp_path_factory.mktemp("ci") / "checkout")


@pytest.mark.slow
@pytest.mark.parametrize("deploy_status, live, calls, gate, rollback", [
    (0, SHA, ["deploy"], f"passed: 5 answers in a row, 200 from {SHA}", "not needed"),
    (0, OTHER_SHA, ["deploy", "rollback"], f"failed: no 5 answers in a row from {SHA} within 4 s",
     "done: back to the release before"),
    (1, SHA, ["deploy"], "skipped", "not needed"),
], ids=["the-gate-passes", "the-gate-sees-the-old-release", "deploy-sh-fails"])
def test_the_deploy_job_rolls_back_only_when_its_gate_fails_after_a_deploy(
        server, site, ci_checkout, tmp_path, deploy_status, live, calls, gate, rollback):
    """.github/workflows/ci.yml's deploy job on workflow_dispatch, run by act, through the
    restricted key: the gate reads $DEPLOY_URL until 5 answers in a row come from the commit.
    Should it fail after a deploy that succeeded, the job rolls back once over the same key
    and fails. A deploy that fails has rolled back on the server already: no gate, no rollback.
    The job's summary says which happened."""
    status = tmp_path / "deploy-status"
    status.write_text(f"{deploy_status}\n")
    executable(server.release / "deploy.sh", DEPLOY_AS_TOLD.format(calls=server.deploy_log, status=status))
    site.release = live

    result = run_workflow(
        ci_checkout, "ci.yml", "workflow_dispatch",
        inputs={"sha": SHA, "web_digest": WEB, "nginx_digest": NGINX, "backup_digest": BACKUP},
        variables={"DEPLOY_HOST": "127.0.0.1", "DEPLOY_PORT": str(server.sshd.port), "DEPLOY_USER": "root",
                   "DEPLOY_URL": f"http://127.0.0.1:{site.server_address[1]}", "DEPLOY_GATE_SECONDS": "4"},
        secrets={"DEPLOY_SSH_KEY": server.key.read_text(), "DEPLOY_KNOWN_HOSTS": server.known_hosts.read_text()},
        timeout=300)

    log = result.stdout + result.stderr
    assert (result.returncode == 0) == (calls == ["deploy"] and deploy_status == 0), log_excerpt(result)
    assert [call.split()[1] for call in server.deploy_calls()] == calls, log_excerpt(result)
    assert server.deploy_calls()[0] == f"released deploy {SHA} {WEB} {NGINX} {BACKUP}"
    summary = dict(re.findall(r"^\| (deploy\.sh|gate|rollback) \| (.*) \|$", log, re.MULTILINE))
    assert summary == {"deploy.sh": "failure" if deploy_status else "success", "gate": gate,
                       "rollback": rollback}, log_excerpt(result)
    if live != SHA:  # each failed answer says what it got
        assert f"HTTP 200, release {OTHER_SHA}" in log, log_excerpt(result)
