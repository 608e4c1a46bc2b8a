"""A real ACME CA on loopback: Debian's pebble (Let's Encrypt's test server), and Debian's
certbot with all its state in one directory, so certificates are issued and renewed for real
without Let's Encrypt.

pebble checks HTTP-01 challenges for real: it resolves the name with the system resolver
(`localhost` is in /etc/hosts, so no DNS server is needed) and fetches
http://<name>:<http_port>/.well-known/acme-challenge/<token>, three times, as Let's Encrypt
does from several places. Its CA keys are new on every start and it forgets everything at exit.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import ssl
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .https import SERVER_NAME
from .nginx import make_certificate
from .process import find_binary, free_port, port_open, stop_process
from .wait import wait_for_server

DAY = 24 * 3600
# pebble's defaults are there to shake out fragile clients; these make a run deterministic.
PEBBLE_ENV = {
    # no random 0-15 s sleep before each validation attempt
    "PEBBLE_VA_NOSLEEP": "1",
    # default: 5 % of good nonces are refused as badNonce (clients must retry)
    "PEBBLE_WFE_NONCEREJECT": "0",
    # default: an order reuses a valid authorization half the time, with no challenge at all;
    # 0 makes every order, renewals too, prove control through nginx again
    "PEBBLE_AUTHZREUSE": "0",
}


class PebbleServer:
    """pebble on free loopback ports. Its ACME API speaks HTTPS only: with the nginx image's own
    development certificate hook's leaf for localhost and 127.0.0.1, which is what a client must
    trust (`tls_cafile`). `http_port` is where it fetches HTTP-01 challenges (Let's Encrypt: 80).
    `validity_days` is the life of issued certificates (pebble's default: 5 years)."""

    def __init__(self, http_port: int, *, validity_days: int = 90):
        self.workdir = Path(tempfile.mkdtemp(prefix="kit-pebble-"))
        self.port, self.management_port = free_port(), free_port()
        self.http_port = http_port
        self.validity_days = validity_days
        self.proc: subprocess.Popen | None = None

    @property
    def directory(self) -> str:
        """The ACME directory URL, certbot's --server."""
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def tls_cafile(self) -> str:
        return str(self.workdir / "tls" / "fullchain.pem")

    @property
    def log(self) -> Path:
        return self.workdir / "pebble.log"

    def start(self) -> None:
        result = make_certificate(self.workdir / "tls", SERVER_NAME)
        if result.returncode != 0:
            raise RuntimeError(f"the certificate hook failed: {result.stderr}")
        config = self.workdir / "pebble-config.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": self.tls_cafile,
            "privateKey": str(self.workdir / "tls" / "privkey.pem"),
            "httpPort": self.http_port,
            "tlsPort": free_port(),  # TLS-ALPN-01, offered but unused by certbot --webroot
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            # in seconds; in Debian's 2.4, though its README does not list it
            "certificateValidityPeriod": self.validity_days * DAY,
        }}))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([find_binary("pebble"), "-config", str(config)],
                                         env={**os.environ, **PEBBLE_ENV}, stdout=log, stderr=subprocess.STDOUT)
        wait_for_server(self.proc, lambda: "ACME directory available at" in self.log.read_text(), 15,
                        "pebble serving its directory", self.log)
        # pebble logs that line before it binds the ACME port (the management one is bound in a goroutine)
        wait_for_server(self.proc, lambda: port_open(self.port) and port_open(self.management_port), 15,
                        f"pebble accepting on ports {self.port} and {self.management_port}", self.log)

    def _management(self, path: str) -> str:
        """pebble's own (non-ACME) API, same TLS certificate as the ACME one."""
        context = ssl.create_default_context(cafile=self.tls_cafile)
        with urllib.request.urlopen(f"https://127.0.0.1:{self.management_port}{path}", context=context,
                                    timeout=10) as response:
            return response.read().decode()

    def root_pem(self) -> str:
        """The root of every certificate this run issues: what a test's client trusts."""
        return self._management("/roots/0")

    def intermediate_pem(self) -> str:
        """The CA that signs the certificates (the issuer of every leaf)."""
        return self._management("/intermediates/0")

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class Certbot:
    """Debian's certbot with its config (/etc/letsencrypt), work and logs directories under `root`,
    trusting `ca_bundle` for the ACME server's HTTPS (certbot talks HTTP through requests, which
    reads REQUESTS_CA_BUNDLE)."""

    root: Path
    ca_bundle: str

    def directories(self) -> list[str]:
        return [f"--{name}-dir={self.root / name}" for name in ("config", "work", "logs")]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "REQUESTS_CA_BUNDLE": self.ca_bundle}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([find_binary("certbot"), *args, *self.directories()], env=self.environment(),
                              capture_output=True, text=True, timeout=timeout)

    def live(self, name: str) -> Path:
        """live/<name>: symlinks to the lineage's newest cert.pem, fullchain.pem, privkey.pem."""
        return self.root / "config" / "live" / name

    def renewal_conf(self, name: str) -> Path:
        return self.root / "config" / "renewal" / f"{name}.conf"


_COMPOSE_SHIM = """\
#!/usr/bin/env bash
# `docker compose` for scripts/renew-certificates.sh, natively (written by harness/acme.py):
# the certbot service is the real certbot with its directories where the volumes would be,
# and `nginx -s reload` in the nginx service is the real one against the test's nginx.
set -o errexit -o nounset -o pipefail
files="--file docker-compose.yml --file docker-compose.prod.yml"
if [[ "${{1:-}} ${{2:-}} ${{3:-}} ${{4:-}}" != "$files" ]]; then
  echo "compose-shim: error: expected $files first, got: $*" >&2
  exit 64
fi
shift 4
if [[ "${{1:-}} ${{2:-}} ${{3:-}}" == "run --rm certbot" ]]; then
  shift 3
  exec {certbot} "$@" {certbot_directories}
elif [[ "$*" == "exec -T nginx nginx -s reload" ]]; then
  exec {reload}
elif [[ "$*" == "exec -T nginx sha256sum /etc/nginx/certs/fullchain.pem" ]]; then
  exec sha256sum {cert_dir}/fullchain.pem
fi
echo "compose-shim: error: not a call the shim maps: $*" >&2
exit 64
"""


def compose_shim(path: Path, certbot: Certbot, reload_nginx: list[str], cert_dir: Path) -> Path:
    """Write an executable stand-in for `docker compose` (COMPOSE=<path>) that maps the calls
    scripts/renew-certificates.sh makes, exactly as it makes them, to real commands: `run --rm
    certbot ARGS` to certbot ARGS, `exec -T nginx nginx -s reload` to `reload_nginx`, and the
    checksum of nginx's certificate to that of `cert_dir`'s. Any other call fails, so a change in
    the script's Compose command line fails the test too."""
    path.write_text(_COMPOSE_SHIM.format(
        certbot=shlex.quote(find_binary("certbot")),
        certbot_directories=shlex.join(certbot.directories()),
        reload=shlex.join(reload_nginx),
        cert_dir=shlex.quote(str(cert_dir)),
    ))
    path.chmod(0o755)
    return path
