"""The nginx/ tree renders like the image renders it, and the real nginx accepts it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import VENV_BIN
from harness.nginx import (
    CERT_SCRIPT,
    NGINX_DIR,
    TRUSTED_PROXIES_SCRIPT,
    UPSTREAM_SCRIPT,
    build_tree,
    loopback_env,
    make_certificate,
    render,
    template_variables,
    write_trusted_proxies,
    write_upstream,
)
from harness.process import find_binary

# The contract's template variables, with the values the container uses.
CONTAINER_ENV = {
    "NGINX_SERVER_NAME": "localhost",
    "NGINX_API_RATE": "10r/s",
    "NGINX_API_BURST": "20",
    "NGINX_CONN_LIMIT": "64",
    "NGINX_HTTP_PORT": "80",
    "NGINX_HTTPS_PORT": "443",
    "NGINX_STATUS_PORT": "8080",
    "NGINX_CERT_DIR": "/etc/nginx/certs",
    "NGINX_STATIC_ROOT": "/srv/static",
    "NGINX_ACME_ROOT": "/var/www/certbot",
}

SHELLCHECK = VENV_BIN / "shellcheck"


def nginx_version() -> tuple[int, ...]:
    out = subprocess.run([find_binary("nginx"), "-v"], capture_output=True, text=True, check=True).stderr
    return tuple(int(part) for part in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out).groups())


def test_render_replaces_only_defined_nginx_variables():
    text = "a ${NGINX_A} b $NGINX_A c $NGINX_A_B d ${NGINX_UNSET} e $host f ${HOME} g ${NGINX_A}x"
    rendered = render(text, {"NGINX_A": "X", "HOME": "/root"})
    # Same result as `NGINX_A=X envsubst '${NGINX_A}'` (the image lists only defined names).
    assert rendered == "a X b X c $NGINX_A_B d ${NGINX_UNSET} e $host f ${HOME} g Xx"


def test_template_uses_exactly_the_contract_variables():
    # The compose files must set each of these; a typo here would reach nginx as a literal.
    assert template_variables() == set(CONTAINER_ENV)


def test_rendered_template_keeps_nginx_variables():
    template = (NGINX_DIR / "templates" / "default.conf.template").read_text()
    rendered = render(template, CONTAINER_ENV)
    assert "NGINX_" not in re.sub(r"#.*", "", rendered)
    for nginx_variable in ("$host", "$request_uri"):
        assert nginx_variable in rendered
    assert "include upstream.d/*.conf;" in rendered
    assert "rate=10r/s;" in rendered and "limit_conn addr 64;" in rendered
    assert "ssl_certificate /etc/nginx/certs/fullchain.pem;" in rendered


@pytest.mark.parametrize("server_name", ["localhost", "example.com"])
def test_nginx_accepts_the_rendered_tree(nginx_prefix, server_name):
    env = loopback_env(nginx_prefix, http_port=8080, https_port=8443)
    env["NGINX_SERVER_NAME"] = server_name
    assert make_certificate(nginx_prefix / "certs", server_name).returncode == 0
    assert write_upstream(nginx_prefix, "127.0.0.1:9").returncode == 0
    tree = build_tree(nginx_prefix, env)

    result = tree.check()

    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    messages = [line for line in result.stderr.splitlines() if re.search(r"\[(warn|emerg|alert|crit|error)\]", line)]
    if nginx_version() >= (1, 25, 1):
        # `listen ... http2` is deprecated there but still works (see the template).
        messages = [line for line in messages if '"listen ... http2" directive is deprecated' not in line]
    assert messages == []


def test_nginx_refuses_a_missing_certificate(nginx_prefix):
    # Proves the test above really loads the certificate files.
    env = loopback_env(nginx_prefix, http_port=8080, https_port=8443)
    assert write_upstream(nginx_prefix, "127.0.0.1:9").returncode == 0
    tree = build_tree(nginx_prefix, env)

    result = tree.check()

    assert result.returncode != 0
    assert "fullchain.pem" in result.stderr


def test_certificate_hook_is_executable_and_shellcheck_clean():
    # The image's entrypoint skips hooks that are not executable.
    assert os.access(CERT_SCRIPT, os.X_OK)
    result = subprocess.run([str(SHELLCHECK), str(CERT_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_certificate_hook_usage():
    shown = subprocess.run([str(CERT_SCRIPT), "--help"], capture_output=True, text=True)
    refused = subprocess.run([str(CERT_SCRIPT), "--bogus"], capture_output=True, text=True)

    assert shown.returncode == 0
    assert shown.stdout.startswith("Create a self-signed development certificate")
    assert refused.returncode == 2
    assert "Usage:" in refused.stderr


def openssl_x509(cert: Path, *args: str) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", *args],
                          capture_output=True, text=True, check=True).stdout


def test_certificate_hook_creates_a_leaf_for_the_server_name(tmp_path):
    cert_dir = tmp_path / "certs"

    result = make_certificate(cert_dir, "example.com")

    assert result.returncode == 0, result.stderr
    cert, key = cert_dir / "fullchain.pem", cert_dir / "privkey.pem"
    extensions = openssl_x509(cert, "-ext", "subjectAltName,basicConstraints,extendedKeyUsage")
    assert "DNS:example.com, DNS:localhost, IP Address:127.0.0.1" in extensions
    assert "CA:FALSE" in extensions
    assert "TLS Web Server Authentication" in extensions
    assert key.stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in cert_dir.iterdir()) == ["fullchain.pem", "privkey.pem"]
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(cert), "-purpose", "sslserver", str(cert)],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    # The key belongs to the certificate.
    cert_pub = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"],
                              capture_output=True, text=True, check=True).stdout
    key_pub = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout"],
                             capture_output=True, text=True, check=True).stdout
    assert cert_pub == key_pub


def test_certificate_hook_keeps_an_installed_certificate(tmp_path):
    cert_dir = tmp_path / "certs"
    assert make_certificate(cert_dir).returncode == 0
    before = {p.name: p.read_bytes() for p in cert_dir.iterdir()}

    again = make_certificate(cert_dir)

    assert again.returncode == 0
    assert "using the existing certificate" in again.stdout
    assert {p.name: p.read_bytes() for p in cert_dir.iterdir()} == before


def test_certificate_hook_runs_under_posix_sh(tmp_path):
    # The official images run hooks with /bin/sh (dash on Debian, busybox on Alpine).
    shell = shutil.which("dash") or "/bin/sh"
    env = {**os.environ, "NGINX_CERT_DIR": str(tmp_path), "NGINX_SERVER_NAME": "10.0.0.5"}
    result = subprocess.run([shell, str(CERT_SCRIPT)], env=env, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert "IP Address:10.0.0.5, DNS:localhost, IP Address:127.0.0.1" in openssl_x509(
        tmp_path / "fullchain.pem", "-ext", "subjectAltName")


def blocks(text: str) -> list[tuple[str, list[str]]]:
    """(block header, its own directives) for every {...} block, comments dropped."""
    found, stack = [], []
    for line in (re.sub(r"#.*", "", raw).strip() for raw in text.splitlines()):
        if line.endswith("{"):
            stack.append((line[:-1].strip(), []))
        elif line == "}":
            found.append(stack.pop())
        elif line and stack:
            stack[-1][1].append(line)
    return found


@pytest.mark.parametrize("template", sorted(NGINX_DIR.glob("templates/*.template")), ids=lambda p: p.name)
def test_locations_with_add_header_repeat_the_inherited_headers(template):
    # add_header in a block discards every add_header inherited from the server: such a
    # block must include the header snippets again, or its responses lose them.
    for header, directives in blocks(template.read_text()):
        if header.startswith("location") and any(d.startswith("add_header") for d in directives):
            assert "include snippets/security-headers.conf;" in directives, header
            assert "include snippets/request-id.conf;" in directives, header


@pytest.mark.parametrize("template", sorted(NGINX_DIR.glob("templates/*.template")), ids=lambda p: p.name)
def test_proxied_locations_use_the_proxy_snippet(template):
    # proxy_set_header has the same all-or-nothing inheritance as add_header.
    for header, directives in blocks(template.read_text()):
        if any(d.startswith("proxy_pass") for d in directives):
            assert "include snippets/proxy.conf;" in directives, header


def test_upstream_hook_names_every_target_once_resolved_by_default(nginx_prefix):
    first = write_upstream(nginx_prefix, "web:8000 other:8000")
    listed = (nginx_prefix / "upstream.d" / "web.conf").read_text()
    again = write_upstream(nginx_prefix, "web:8000")  # a restart writes the list afresh

    assert first.returncode == again.returncode == 0
    assert listed == ("server web:8000 max_fails=1 fail_timeout=2s;\n"
                      "server other:8000 max_fails=1 fail_timeout=2s;\n")
    assert (nginx_prefix / "upstream.d" / "web.conf").read_text() == "server web:8000 max_fails=1 fail_timeout=2s;\n"


def fake_nginx(directory: Path, version: str) -> str:
    """A PATH whose `nginx -v` reports `version`, as nginx does (on stderr)."""
    directory.mkdir(exist_ok=True)
    script = directory / "nginx"
    script.write_text(f"#!/bin/sh\necho 'nginx version: nginx/{version}' >&2\n")
    script.chmod(0o755)
    return f"{directory}:{os.environ['PATH']}"


@pytest.mark.parametrize("version", ["1.27.3", "1.28.0", "1.30.6"])
def test_upstream_hook_re_resolves_through_the_resolver_on_nginx_1_27_3_and_later(nginx_prefix, tmp_path, version):
    result = write_upstream(nginx_prefix, "web-live:8000", resolver="127.0.0.11",
                            path=fake_nginx(tmp_path / "bin", version))

    assert result.returncode == 0, result.stderr
    assert (nginx_prefix / "upstream.d" / "web.conf").read_text() == (
        "resolver 127.0.0.11 valid=1s ipv6=off;\nresolver_timeout 2s;\n"
        "server web-live:8000 resolve max_fails=1 fail_timeout=2s;\n")
    assert "re-resolved through 127.0.0.11" in result.stdout


@pytest.mark.parametrize("version", ["1.27.2", "1.26.3", "1.22.1"])
def test_upstream_hook_refuses_a_resolver_on_an_older_nginx_and_names_the_fix(nginx_prefix, tmp_path, version):
    result = write_upstream(nginx_prefix, "web-live:8000", resolver="127.0.0.11",
                            path=fake_nginx(tmp_path / "bin", version))

    assert result.returncode == 1
    assert f"nginx {version} cannot re-resolve" in result.stderr and "fix: " in result.stderr
    assert not (nginx_prefix / "upstream.d" / "web.conf").exists()


def test_upstream_hook_checks_the_real_nginx_it_runs_with(nginx_prefix):
    """This machine's nginx is Debian 12's 1.22: refused, by its own `nginx -v`."""
    real = subprocess.run(["nginx", "-v"], capture_output=True, text=True, env={"PATH": "/usr/sbin:/usr/bin"})
    version = real.stderr.strip().rsplit("/", 1)[1]
    result = write_upstream(nginx_prefix, "web-live:8000", resolver="127.0.0.11",
                            path=f"/usr/sbin:{os.environ['PATH']}")

    assert result.returncode == (0 if tuple(map(int, version.split("."))) >= (1, 27, 3) else 1), result.stderr


def test_upstream_hook_is_executable_and_shellcheck_clean():
    assert os.access(UPSTREAM_SCRIPT, os.X_OK)
    result = subprocess.run([str(SHELLCHECK), str(UPSTREAM_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_trusted_proxies_hook_writes_realip_for_each_range_and_none_by_default(nginx_prefix):
    conf_d = nginx_prefix / "conf.d"
    conf_d.mkdir()

    assert write_trusted_proxies(conf_d, "").returncode == 0
    none = (conf_d / "trusted-proxies.conf").read_text()
    assert write_trusted_proxies(conf_d, "10.0.0.0/16  192.0.2.7 2001:db8::/32").returncode == 0
    some = (conf_d / "trusted-proxies.conf").read_text()

    assert "set_real_ip_from" not in none and "default 0;" in none
    directives = [line.strip() for line in some.splitlines() if not line.startswith("#")]
    assert [d for d in directives if d.startswith("set_real_ip_from")] == [
        "set_real_ip_from 10.0.0.0/16;", "set_real_ip_from 192.0.2.7;", "set_real_ip_from 2001:db8::/32;"]
    assert {"real_ip_header X-Forwarded-For;", "real_ip_recursive on;", "10.0.0.0/16 1;"} <= set(directives)


@pytest.mark.parametrize("value", ["10.0.0.0/16;include /etc/passwd", "balancer.internal", "10.0.0.0/16,10.1.0.0/16"])
def test_trusted_proxies_hook_refuses_anything_but_addresses(nginx_prefix, value):
    result = write_trusted_proxies(nginx_prefix, value)

    assert result.returncode == 1
    assert "error: NGINX_TRUSTED_PROXIES has" in result.stderr and "fix:" in result.stderr
    assert not (nginx_prefix / "trusted-proxies.conf").exists()


def test_trusted_proxies_hook_is_executable_and_shellcheck_clean():
    assert os.access(TRUSTED_PROXIES_SCRIPT, os.X_OK)
    result = subprocess.run([str(SHELLCHECK), str(TRUSTED_PROXIES_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
