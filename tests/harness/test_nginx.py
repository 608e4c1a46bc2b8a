"""harness.nginx: the repo's tree run by the real nginx, and its load-test variant."""

from harness.nginx import LOAD_TEST_LIMITS, NginxServer


def test_a_load_test_server_lifts_only_the_per_address_limits():
    server = NginxServer(upstream_port=9, load_test=True)
    try:
        rendered = (server.prefix / "conf.d" / "default.conf").read_text()
        upstream = (server.prefix / "upstream.d" / "web.conf").read_text()
        result = server.tree.check()
    finally:
        server.close()

    assert f"rate={LOAD_TEST_LIMITS['NGINX_API_RATE']};" in rendered
    assert f"limit_conn addr {LOAD_TEST_LIMITS['NGINX_CONN_LIMIT']};" in rendered
    assert f"limit_req zone=api burst={LOAD_TEST_LIMITS['NGINX_API_BURST']} nodelay;" in rendered
    assert upstream == "server 127.0.0.1:9 max_fails=1 fail_timeout=2s;\n"
    assert result.returncode == 0, result.stderr
