"""Node providers against a real cluster: local processes, and libcloud through a test driver that runs podnodes."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from podnode.local.cluster import LocalCluster, get_json
from podnode.scaling import userdata
from podnode.scaling.providers import LaunchedNode, LibcloudProvider, LocalProvider, Provider, ProviderError

from ..conftest import pid_alive, start_cluster
from . import podtest_driver

FAST = ["--election-timeout-s", "0.3", "--node-lost-after-s", "1.5"]
SECRET = "t0p s3cret 'quoted'"
AWKWARD = {
    "node_id": "n 4 'x'",
    "join_url": "http://127.0.0.1:8080/?a='b\"c d'&e=$HOME",
    "cluster_secret": "s p'a\"c$e`id`\\{x} ;rm -rf /",
}


# ---------------------------------------------------------------------------------------------------- helpers


async def poll(check: Callable[[], Any], *, timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Await until `check` (run in a thread) returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last value {last!r}")


def workers(url: str, token: str) -> dict[str, str]:
    """{worker id: "up"/"lost"} as one member sees it ({} if it does not answer)."""
    try:
        code, body = get_json(url + "/POD/?action=getWorkers", token=token)
    except OSError:
        return {}
    return {w["id"]: w["status"] for w in body.get("workers", [])} if code == 200 else {}


@pytest.fixture
def secret_cluster(tmp_path) -> LocalCluster:
    """3 nodes, 1 slot each, fast failure detection, a cluster secret."""
    c = start_cluster(tmp_path / "cluster", nodes=3, slots=1, extra_args=FAST, secret=SECRET)
    yield c
    c.stop()


@pytest.fixture
def fast_cluster(tmp_path) -> LocalCluster:
    """3 nodes, 1 slot each, fast failure detection, the secret LocalCluster made."""
    c = start_cluster(tmp_path / "cluster", nodes=3, slots=1, extra_args=FAST)
    yield c
    c.stop()


@pytest.fixture
def podtest(tmp_path):
    """Make get_driver("podtest") work; yields a factory of LibcloudProviders whose servers are stopped after."""
    podtest_driver.register()
    made: list[LibcloudProvider] = []

    def make(**overrides: Any) -> LibcloudProvider:
        kwargs = dict(driver="podtest", key="k", driver_kwargs={"data_dir": tmp_path / "cloud"}, image="pod-image",
                      size="small", join_url="http://127.0.0.1:9", cluster_secret=None, slots=1)
        kwargs.update(overrides)
        provider = LibcloudProvider(**kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        if provider._driver is not None:
            provider._driver.destroy_all()


# ---------------------------------------------------------------------------------------------------- local


async def test_local_provider_launches_a_node_that_joins_and_destroy_stops_it(secret_cluster, tmp_path):
    cluster = secret_cluster
    provider = LocalProvider(join_url=cluster.urls[0], data_dir=tmp_path / "local", slots=1, secret=SECRET,
                             extra_args=FAST, stop_grace_s=10.0)
    assert isinstance(provider, Provider)
    assert (provider.name, provider.hourly_price(), provider.slots_per_node()) == ("local", 0.0, 1)
    try:
        launched = await provider.launch("n4")
        assert launched == LaunchedNode(node_id="n4", ref=launched.ref, hourly_price=0.0, provider="local")
        pid = int(launched.ref)
        await poll(lambda: workers(cluster.urls[1], cluster.token).get("n4") == "up", timeout_s=30, what="n4 up")
        assert await provider.list_nodes() == [launched]
        status = await poll(lambda: get_json(provider.url("n4") + "/status", token=cluster.token)[1], timeout_s=10,
                            what="n4 status")
        assert status["node"] == "n4" and status["leader"]
        assert SECRET not in " ".join(provider.command("n4", 1, 2))   # the secret travels in the environment
        with pytest.raises(ProviderError, match="already running"):
            await provider.launch("n4")

        await provider.destroy("n4")
        await poll(lambda: not pid_alive(pid), timeout_s=15, what="n4's process gone")
        assert await provider.list_nodes() == []
        await provider.destroy("n4")                 # idempotent
        await provider.destroy("never-launched")
        await poll(lambda: workers(cluster.urls[0], cluster.token).get("n4") == "lost", timeout_s=20, what="n4 lost")
        assert (tmp_path / "local" / "n4.log").exists()
    finally:
        await provider.close()


async def test_local_provider_close_stops_everything(tmp_path):
    # Nothing to join: the nodes keep retrying, which is all close() needs.
    provider = LocalProvider(join_url="http://127.0.0.1:9", data_dir=tmp_path, extra_args=FAST, stop_grace_s=5)
    try:
        pids = [int((await provider.launch(n)).ref) for n in ("a", "b")]
        assert sorted(n.node_id for n in await provider.list_nodes()) == ["a", "b"]
    finally:
        await provider.close()
    assert await provider.list_nodes() == []
    await poll(lambda: not any(pid_alive(p) for p in pids), timeout_s=10, what="processes gone")


# ---------------------------------------------------------------------------------------------------- libcloud


async def test_libcloud_provider_launches_nodes_that_join_and_destroys_them(fast_cluster, podtest):
    cluster = fast_cluster
    provider = podtest(join_url=cluster.urls[1], cluster_secret=cluster.secret, location="local")
    assert isinstance(provider, Provider)
    await provider.prepare()
    assert (provider.name, provider.hourly_price(), provider.slots_per_node()) == ("libcloud", 0.05, 1)

    n5, n6 = await asyncio.gather(provider.launch("n5"), provider.launch("n6"))
    servers = {n.name: n for n in provider.driver.list_nodes()}
    assert n5 == LaunchedNode(node_id="n5", ref=servers["pod-n5"].id, hourly_price=0.05, provider="libcloud")
    assert n6.ref == servers["pod-n6"].id != n5.ref
    await poll(lambda: (lambda w: w.get("n5") == "up" and w.get("n6") == "up")(workers(cluster.urls[0], cluster.token)),
               timeout_s=40, what="n5 and n6 up")
    assert sorted(await provider.list_nodes(), key=lambda n: n.node_id) == [n5, n6]
    with pytest.raises(ProviderError, match="already exists"):
        await provider.launch("n5")

    pid = servers["pod-n5"].extra["pid"]
    await provider.destroy("n5")
    await poll(lambda: not pid_alive(pid), timeout_s=15, what="n5's process gone")
    assert await provider.list_nodes() == [n6]
    await provider.destroy("n5")                     # idempotent
    await poll(lambda: workers(cluster.urls[2], cluster.token).get("n5") == "lost", timeout_s=20, what="n5 lost")
    assert workers(cluster.urls[2], cluster.token).get("n6") == "up"
    # Every server the driver ever made had its own id.
    assert len({n.id for n in provider.driver.created}) == len(provider.driver.created) == 2


async def test_libcloud_missing_size_image_or_location_lists_what_exists(podtest):
    with pytest.raises(ProviderError, match=r"no size .*'huge'.*small.*large"):
        await podtest(size="huge").launch("x")
    with pytest.raises(ProviderError, match=r"no image .*'nope'.*pod-image"):
        await podtest(image="nope").prepare()
    with pytest.raises(ProviderError, match=r"no location .*'mars'.*local"):
        await podtest(location="mars").prepare()
    with pytest.raises(ProviderError, match="cannot create libcloud driver 'no-such-cloud'"):
        await podtest(driver="no-such-cloud").launch("x")


async def test_libcloud_failed_create_is_a_provider_error(podtest):
    provider = podtest(size="large")
    await provider.prepare()
    assert provider.hourly_price() == 0.20
    provider.driver.fail_next_create = True
    with pytest.raises(ProviderError, match="create_node pod-x failed: LibcloudError.*out of capacity"):
        await provider.launch("x")
    assert provider.driver.fail_next_create is False
    assert await provider.list_nodes() == [] and provider.driver.created == []


async def test_libcloud_driver_without_userdata_or_location_is_called_without_them(caplog):
    # libcloud's Dummy driver: create_node(name, size, image) only; prices are set; names are its own.
    provider = LibcloudProvider(driver="dummy", key="0", image="Ubuntu 9.10", size="1", location="1",
                                join_url="http://127.0.0.1:9", cluster_secret="s", slots=2)
    with caplog.at_level(logging.WARNING, logger="podnode.scaling.providers"):
        launched = await provider.launch("d1")
    assert (launched.provider, launched.hourly_price) == ("libcloud", 4.0)
    assert "takes no ex_userdata" in caplog.text and "takes no location" in caplog.text
    await provider.destroy("d1")                     # named dummy-N, not pod-d1: nothing to do, and that is fine


def test_podtest_register_is_idempotent():
    podtest_driver.register()
    podtest_driver.register()
    from libcloud.compute.providers import get_driver
    assert get_driver("podtest") is podtest_driver.PodTestNodeDriver


# ---------------------------------------------------------------------------------------------------- userdata


def test_userdata_round_trips_awkward_values():
    script = userdata.render(**AWKWARD, slots=3, pod_version="1.2.3")
    assert script.startswith("#!/bin/bash\nPOD_NODE_ID=")
    assert userdata.parse(script) == {
        "POD_NODE_ID": AWKWARD["node_id"], "POD_JOIN": AWKWARD["join_url"],
        "POD_SECRET": AWKWARD["cluster_secret"], "POD_SLOTS": "3", "POD_PIP_SPEC": "podnode==1.2.3"}


def test_userdata_block_means_the_same_to_bash(tmp_path):
    script = userdata.render(**AWKWARD, slots=3, pod_version="1.2.3")
    block = "".join(f"{line}\n" for line in script.splitlines()[1:6])
    assert all(line.startswith("POD_") for line in block.splitlines())
    out = subprocess.run(["bash", "-c", block + 'printf "%s\\0" "$POD_NODE_ID" "$POD_JOIN" "$POD_SECRET" '
                          '"$POD_SLOTS" "$POD_PIP_SPEC"'], capture_output=True, check=True, cwd=tmp_path)
    assert out.stdout.decode().split("\0")[:-1] == list(userdata.parse(script).values())
    assert not list(tmp_path.iterdir())             # nothing in the values ran


def test_userdata_script_is_valid_bash_and_runs_podnode_under_systemd(tmp_path):
    script = userdata.render(node_id="n9", join_url="http://10.0.0.1:8080", cluster_secret="s", slots=2,
                             pod_version="0.1.0")
    path = tmp_path / "ud.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    for expected in ("python3 -m venv /opt/pod", '/opt/pod/bin/pip install "$POD_PIP_SPEC"',
                     "systemctl enable --now podnode.service", "--http 0.0.0.0:8080",
                     "IP=\"$(hostname -I | awk '{print $1}')\"", '--raft "$IP:9080"', '--advertise-host "$IP"',
                     '--slots "$POD_SLOTS"', "export POD_SECRET", '--join "$POD_JOIN"', '--id "$POD_NODE_ID"'):
        assert expected in script, expected
    assert "--secret" not in script                 # the secret reaches podnode in its environment, never argv


def test_userdata_pip_spec_env_and_bad_values(monkeypatch):
    monkeypatch.setenv("POD_PIP_SPEC", "podnode @ https://example.com/podnode-0.1.0-py3-none-any.whl")
    script = userdata.render(node_id="n1", join_url="u", cluster_secret=None, slots=1, pod_version="0.1.0")
    settings = userdata.parse(script)
    assert settings["POD_PIP_SPEC"] == "podnode @ https://example.com/podnode-0.1.0-py3-none-any.whl"
    assert settings["POD_SECRET"] == ""
    with pytest.raises(ValueError, match="line break"):
        userdata.render(node_id="n1", join_url="u", cluster_secret="a\nb", slots=1, pod_version="0.1.0")
    with pytest.raises(ValueError, match="slots"):
        userdata.render(node_id="n1", join_url="u", cluster_secret=None, slots=0, pod_version="0.1.0")
    with pytest.raises(ValueError, match="one shell word"):
        userdata.parse("#!/bin/bash\nPOD_NODE_ID=a b\n")
    assert userdata.parse("#!/bin/bash\n# comment\n\nPOD_X='1'\nset -e\nPOD_Y=2\n") == {"POD_X": "1"}
