"""harness.nginx: the repo's tree as the image lays it out, and its load-test variant."""

from harness.nginx import build_tree, loopback_env, make_certificate


def test_a_load_test_tree_lifts_only_the_per_address_limits(nginx_prefix):
    env = loopback_env(nginx_prefix, upstream="127.0.0.1:9", http_port=8080, https_port=8443)
    assert make_certificate(nginx_prefix / "certs").returncode == 0

    tree = build_tree(nginx_prefix, env, load_test=True)

    conf = tree.conf.read_text()
    assert "rate=1000000r/s;" in conf and "limit_conn addr 65535;" in conf
    assert "limit_conn_status 429;" in conf  # everything else is the shipped file
    result = tree.check()
    assert result.returncode == 0, result.stderr
