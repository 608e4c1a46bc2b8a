"""Certificates issued and renewed for real: certbot runs docs/certificates.md's own command
(deploy hook included) against pebble, a real ACME CA, which validates the HTTP-01 challenge
through the repo's nginx; nginx reloads and serves the certificate. Then
scripts/renew-certificates.sh renews it while load runs through nginx, and no request fails.

One native stack (Postgres, Redis, Gunicorn, nginx TLS on loopback), one pebble and one
certbot state directory for the module, all stopped by PID. pebble issues 90-day
certificates, like Let's Encrypt.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import REPO
from harness.acme import Certbot, PebbleServer, compose_shim
from harness.https import SERVER_NAME, Client, LoopbackHTTPSConnection, tls_context
from harness.load import LoadRun
from harness.process import child_pids
from harness.stack import NativeStack
from harness.wait import wait_for

pytestmark = pytest.mark.slow

DOCS = REPO / "docs" / "certificates.md"
SCRIPT = REPO / "scripts" / "renew-certificates.sh"
# The prod stack's paths in the documented commands: the webroot volume, where nginx reads its pair.
IMAGE_WEBROOT = "/var/www/certbot"
IMAGE_CERT_DIR = "/etc/nginx/certs/"


def documented_certonly(acme_root: Path, cert_dir: Path) -> list[str]:
    """Step 3 of docs/certificates.md, the command ops run, as certbot's arguments, with the
    image's paths swapped for this nginx's: the webroot, the name, the deploy hook's target."""
    text = DOCS.read_text()
    step = text[text.index("# 3. Issue the certificate"):]
    lines = [line.rstrip("\\").strip() for line in step[:step.index("\n\n")].splitlines() if not line.startswith("#")]
    words = shlex.split(" ".join(lines))
    assert words[:4] == ["$compose", "run", "--rm", "certbot"] and IMAGE_WEBROOT in words, words
    args = [{IMAGE_WEBROOT: str(acme_root), "$DOMAIN": SERVER_NAME}.get(word, word) for word in words[4:]]
    hook = args.index("--deploy-hook") + 1
    assert IMAGE_CERT_DIR in args[hook], args[hook]
    args[hook] = args[hook].replace(IMAGE_CERT_DIR, f"{cert_dir}/")
    return args


def openssl(*args: str, stdin: str = "") -> str:
    result = subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def certificate_fields(pem: str) -> dict[str, str]:
    """serial (hex, as openssl prints it), issuer and subject of the first certificate in pem."""
    output = openssl("x509", "-noout", "-serial", "-issuer", "-subject", "-nameopt", "RFC2253", stdin=pem)
    return dict(line.split("=", 1) for line in output.splitlines())


def served_certificate(port: int, root: Path) -> dict[str, str]:
    """What `openssl s_client` gets from 127.0.0.1:port for our name, verified up to `root`
    (chain and name; a failed verification fails the handshake)."""
    output = openssl("s_client", "-connect", f"127.0.0.1:{port}", "-servername", SERVER_NAME,
                     "-CAfile", str(root), "-verify_hostname", SERVER_NAME, "-verify_return_error")
    return certificate_fields(output)


def challenge_fetches(stack) -> list[str]:
    """nginx's access log lines for pebble's HTTP-01 fetches (pebble's VA names itself)."""
    return [line for line in stack.nginx.access_log.read_text().splitlines()
            if '"uri":"/.well-known/acme-challenge/' in line and "Pebble-VA" in line]


def serial_of(pem_file: Path) -> int:
    return int(certificate_fields(pem_file.read_text())["serial"], 16)


@pytest.fixture(scope="module")
def stack() -> Iterator[NativeStack]:
    # the per-address limits lifted: all the load comes from 127.0.0.1
    with NativeStack(load_test=True) as stack:
        yield stack


@pytest.fixture(scope="module")
def pebble(stack) -> Iterator[PebbleServer]:
    server = PebbleServer(stack.nginx.http_port)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def pebble_root(pebble, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pebble-root") / "root.pem"
    path.write_text(pebble.root_pem())
    return path


@pytest.fixture(scope="module")
def certbot(pebble, tmp_path_factory) -> Certbot:
    return Certbot(tmp_path_factory.mktemp("certbot"), pebble.tls_cafile)


def reload_nginx(stack) -> list[str]:
    """`nginx -s reload`, as `docker compose exec nginx nginx -s reload` runs it in the image:
    the nginx binary reads the pid file and sends the master SIGHUP."""
    return stack.nginx.tree.command("-s", "reload")


@pytest.fixture(scope="module")
def issued(stack, pebble, pebble_root, certbot) -> int:
    """Steps 3 and 4 of docs/certificates.md against pebble: the documented certonly, then a
    reload. Returns the serial nginx serves afterwards."""
    command = documented_certonly(Path(stack.nginx.tree.env["NGINX_ACME_ROOT"]), stack.nginx.prefix / "certs")
    result = certbot.run(*command, "--server", pebble.directory)
    assert result.returncode == 0, result.stdout + result.stderr
    subprocess.run(reload_nginx(stack), check=True, capture_output=True, timeout=30)
    serial = serial_of(certbot.live(SERVER_NAME) / "cert.pem")
    # nginx's master loads the new pair, then starts new workers: a moment after the signal
    wait_for(lambda: _served_serial(stack, pebble_root) == serial, 15, "nginx serving certbot's certificate")
    return serial


def _served_serial(stack, root: Path) -> int | None:
    try:
        return int(served_certificate(stack.nginx.https_port, root)["serial"], 16)
    except AssertionError:
        return None  # still the development certificate, which pebble's root does not verify


@pytest.fixture
def deploy_dir(tmp_path, stack, certbot) -> Path:
    """A deploy directory as on a server: the two Compose files, and `docker compose` mapped to
    the real certbot and nginx."""
    for name in ("docker-compose.yml", "docker-compose.prod.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    compose_shim(tmp_path / "compose", certbot, reload_nginx(stack), stack.nginx.prefix / "certs")
    return tmp_path


def renew(deploy_dir: Path, certbot: Certbot) -> subprocess.CompletedProcess:
    """Run the script as cron does: no terminal (certbot's random sleep would apply)."""
    env = {**certbot.environment(), "COMPOSE": str(deploy_dir / "compose")}
    return subprocess.run([str(SCRIPT)], cwd=deploy_dir, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)


def test_certbot_issues_through_nginx_and_the_deploy_hook_installs_it(stack, pebble, pebble_root, certbot, issued):
    live = certbot.live(SERVER_NAME)
    served = served_certificate(stack.nginx.https_port, pebble_root)
    assert int(served["serial"], 16) == serial_of(live / "cert.pem")
    assert served["issuer"] == certificate_fields(pebble.intermediate_pem())["subject"]
    assert served["subject"] == f"CN={SERVER_NAME}"
    cert_dir = stack.nginx.prefix / "certs"
    for name in ("fullchain.pem", "privkey.pem"):
        assert (cert_dir / name).read_bytes() == (live / name).read_bytes()
    # pebble's validation really went through nginx's HTTP server and the webroot
    challenges = challenge_fetches(stack)
    assert challenges and all('"status":200' in line for line in challenges)


def test_renewal_script_leaves_a_certificate_that_is_not_due_and_nginx_unreloaded(stack, pebble_root, certbot,
                                                                                  issued, deploy_dir):
    """The daily run that renews nothing does not reload nginx: a reload closes idle client
    connections, racing any request sent on one. nginx's workers are the same processes after."""
    before = serial_of(certbot.live(SERVER_NAME) / "cert.pem")
    workers = set(child_pids(stack.nginx.proc.pid))
    result = renew(deploy_dir, certbot)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not yet due for renewal" in result.stdout + result.stderr
    assert "renew-certificates: certificate unchanged: nginx not reloaded" in result.stdout
    assert set(child_pids(stack.nginx.proc.pid)) == workers
    assert serial_of(certbot.live(SERVER_NAME) / "cert.pem") == before
    assert int(served_certificate(stack.nginx.https_port, pebble_root)["serial"], 16) == before


def test_renewal_script_renews_under_load_and_the_reload_drops_no_request(stack, pebble, pebble_root, certbot,
                                                                         issued, deploy_dir):
    # certbot renews once the time left is under renew_before_expiry (Debian's 2.1: 30 days);
    # a window longer than the 90-day life makes it due now, as it would be ~60 days on
    renewal_conf = certbot.renewal_conf(SERVER_NAME)
    original = renewal_conf.read_text()
    renewal_conf.write_text("renew_before_expiry = 91 days\n" + original)
    before = serial_of(certbot.live(SERVER_NAME) / "cert.pem")
    fetches_before = len(challenge_fetches(stack))

    context = tls_context(cafile=str(pebble_root))
    serials: dict[int, int] = {}  # request number -> serial of the certificate it was served with
    workers = 8
    # one client per load worker: a Client is one connection, not safe to share between threads
    # (two workers on one client once left a connection unclosed, failing the test on its warning)
    # Browser-like (resend): a renewal is an nginx reload, which closes idle keep-alive
    # connections, and a request sent on one at that moment gets no answer; a browser resends
    # it (a GET), as the kept-alive half of the load does. What is tested here is that no
    # request is refused or served a broken certificate.
    clients = [Client(stack.nginx.https_port, context, keep_alive=True, resend=True) for _ in range(workers)]

    def new_connection(i: int, worker: int) -> int:
        connection = LoopbackHTTPSConnection(SERVER_NAME, stack.nginx.https_port, context=context)
        try:
            connection.request("GET", "/health")
            # now: getresponse() drops the socket when the answer says Connection: close (as an
            # old worker's does while it shuts down)
            serial = int(connection.sock.getpeercert()["serialNumber"], 16)
            response = connection.getresponse()
            response.read()
            serials[i] = serial
            return response.status
        finally:
            connection.close()

    def kept_alive(i: int, worker: int) -> int:
        # a browser's way: reuse one connection, and resend a GET once if the server had closed it
        return clients[worker].request("GET", "/health").status

    def served_with(serial: int) -> int:
        return sum(1 for seen in list(serials.values()) if seen == serial)

    load = LoadRun([("new connection", new_connection), ("keep-alive", kept_alive)],
                   rate=50, duration=30, max_requests=1500, workers=workers)
    try:
        load.start()
        wait_for(lambda: served_with(before) >= 25, 15, "load served with the current certificate")
        result = renew(deploy_dir, certbot)
        assert result.returncode == 0, result.stdout + result.stderr
        renewed = serial_of(certbot.live(SERVER_NAME) / "cert.pem")
        assert renewed != before
        wait_for(lambda: served_with(renewed) >= 25, 15, "load served with the renewed certificate")
    finally:
        load.stop()
        load.join()
        for client in clients:
            client.close()
        renewal_conf.write_text(original)  # a fresh 90-day certificate is not due again

    summary = load.recorder.summary()
    assert summary["failed"] == 0, [o for o in load.recorder.outcomes if not o.ok][:5]
    assert set(serials.values()) == {before, renewed}
    assert summary["by_op"]["keep-alive"] >= 50
    assert "renew-certificates: certificate renewed: reloading nginx" in result.stdout
    # the renewal proved control again, through nginx under load (pebble reuses no authorization)
    assert len(challenge_fetches(stack)) > fetches_before
    served = served_certificate(stack.nginx.https_port, pebble_root)
    assert int(served["serial"], 16) == renewed
    assert served["issuer"] == certificate_fields(pebble.intermediate_pem())["subject"]
    for name in ("fullchain.pem", "privkey.pem"):
        assert (stack.nginx.prefix / "certs" / name).read_bytes() == (certbot.live(SERVER_NAME) / name).read_bytes()
