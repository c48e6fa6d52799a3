"""What TLS options make of a node's config, without a network: the scheme of its URL and of a --join given as
HOST:PORT, how its peer requests check certificates, and what a node launched by the local provider is given."""

from __future__ import annotations

import ssl

from podnode.config import NodeConfig
from podnode.scaling.factory import launched_node_args
from podnode.server.peers import member_url
from podnode.tls import peer_context

TLS = dict(tls_cert="/etc/pod/n1.pem", tls_key="/etc/pod/n1-key.pem")


def test_a_plain_node_keeps_http_and_aiohttps_default_checks():
    cfg = NodeConfig(node_id="n1", http_port=8080)
    assert cfg.http_url == "http://127.0.0.1:8080"
    assert member_url("10.0.0.2:8080", cfg.http_scheme) == "http://10.0.0.2:8080"
    assert peer_context(cfg) is None
    assert "--tls-cert" not in launched_node_args(cfg)


def test_a_tls_node_advertises_https_joins_over_https_and_checks_peers_names():
    cfg = NodeConfig(node_id="n1", http_port=8443, advertise_host="10.0.0.1", **TLS)
    assert cfg.http_url == "https://10.0.0.1:8443"
    assert member_url("10.0.0.2:8443", cfg.http_scheme) == "https://10.0.0.2:8443"
    assert member_url("http://10.0.0.2:8080", cfg.http_scheme) == "http://10.0.0.2:8080"   # as given
    ctx = peer_context(cfg)                      # no --tls-ca: the system's store, still checked
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_locally_launched_node_gets_the_same_tls_options():
    cfg = NodeConfig(node_id="n1", tls_ca="/etc/pod/ca.pem", **TLS)
    args = launched_node_args(cfg)
    assert args[args.index("--tls-cert") + 1] == TLS["tls_cert"]
    assert args[args.index("--tls-key") + 1] == TLS["tls_key"]
    assert args[args.index("--tls-ca") + 1] == "/etc/pod/ca.pem"
