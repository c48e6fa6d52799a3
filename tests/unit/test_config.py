"""NodeConfig: importing it has no side effect, it is frozen once built, and every setting reaches a reader."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from podnode.config import NodeConfig, RaftTiming


def test_importing_the_config_imports_and_patches_nothing_heavy():
    """A fresh interpreter: importing podnode.config loads neither pysyncobj nor any other part of POD, so it
    cannot patch pysyncobj (its wire format, its pickle protocol) as a side effect."""
    code = ("import sys; import podnode.config\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('pysyncobj', 'aiohttp', 'msgpack', "
            "'zeroconf') or (m.startswith('podnode.') and m != 'podnode.config'))\n"
            "print(','.join(loaded))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == ""


def test_the_config_is_frozen():
    cfg = NodeConfig(node_id="n1")
    for field, value in [("observer", True), ("join", "http://h:1"), ("peers", ["h:2"]), ("node_id", "n2")]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, field, value)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.timing.heartbeat_s = 1.0  # type: ignore[misc]


def test_what_joining_decides_is_a_new_config():
    cfg = NodeConfig(node_id="n4", join="http://h:8080")
    joined = dataclasses.replace(cfg, peers=["h:9080"], observer=True)
    assert (joined.peers, joined.observer) == (["h:9080"], True)
    assert (cfg.peers, cfg.observer) == ([], False)


def test_allow_file_urls_defaults_by_the_http_host():
    assert NodeConfig(node_id="n1").allow_file_urls is True
    assert NodeConfig(node_id="n1", http_host="0.0.0.0").allow_file_urls is False
    assert NodeConfig(node_id="n1", http_host="0.0.0.0", allow_file_urls=True).allow_file_urls is True


def test_every_timing_says_its_unit():
    for cls in (NodeConfig, RaftTiming):
        for f in dataclasses.fields(cls):
            if f.type in ("float", float):
                assert f.name.endswith("_s"), f"{cls.__name__}.{f.name} is a float without a unit in its name"


def test_the_command_line_gives_a_frozen_config():
    from podnode.server.main import parse_args

    cfg = parse_args(["--id", "n4", "--join", "auto", "--join-timeout-s", "5", "--election-timeout-s", "0.3"])
    assert (cfg.node_id, cfg.join, cfg.join_timeout_s, cfg.timing.election_min_s) == ("n4", "auto", 5.0, 0.3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.join = "http://h:8080"  # type: ignore[misc]
