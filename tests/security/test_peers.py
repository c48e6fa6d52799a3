"""Peer routes against real node processes: without a valid proof of the cluster secret they answer 401 and change
nothing; a rogue zeroconf announcer of the cluster's name learns nothing and is skipped by `--join auto`."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.error
import urllib.request

import aiohttp
import pytest
from aiohttp import web

from podnode.cluster_secret import PEER_AUTH_HEADER, sign_request
from podnode.discovery import Announcer, find_members
from podnode.local.procs import free_port

from ..conftest import FAST_RAFT, Client, start_cluster, wait_until
from ..unit.test_discovery import loopback_multicast_works


def request(url: str, path: str, *, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    """One HTTP request (POST when there is a body); (status, JSON body)."""
    req = urllib.request.Request(url + path, data=body, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        assert err.headers.get_content_type() == "application/json", err.headers
        return err.code, json.loads(err.read())


def membership(cluster) -> dict[str, object]:
    """What a refused request must not change: each node's Raft peers and role, and the registered nodes."""
    seen = {}
    for node in cluster.nodes:
        status = cluster.status(node)
        seen[node.node_id] = (status["role"] != "leader", sorted(p["address"] for p in status["peers"]))
    seen["workers"] = sorted(w["id"] for w in Client(cluster.urls, cluster.token).ok("getWorkers")["workers"])
    return seen


def test_peer_routes_refuse_a_missing_or_wrong_secret_and_change_nothing(tmp_path):
    cluster = start_cluster(tmp_path / "c", nodes=3)
    try:
        before = membership(cluster)
        rogue_raft = f"127.0.0.1:{free_port()}"
        join = f"node=rogue&raftAddr={rogue_raft}".encode()
        promote = ",".join(n.raft_addr for n in cluster.nodes).encode()
        attempts = {
            "no credential": {},
            "the secret itself, in the old header": {"X-Pod-Secret": cluster.secret},
            "the secret itself, in the new header": {PEER_AUTH_HEADER: cluster.secret},
            "signed with another secret": sign_request("not the cluster's", "POST", "/internal/join", join),
            "signed for another body": sign_request(cluster.secret, "POST", "/internal/join", b"node=n1&raftAddr=x:1"),
            "signed for another route": sign_request(cluster.secret, "POST", "/internal/promote", join),
            "stale": sign_request(cluster.secret, "POST", "/internal/join", join, now=time.time() - 600),
        }
        for url in cluster.urls:
            for what, headers in attempts.items():
                code, body = request(url, "/internal/join", body=join, headers=headers)
                assert code == 401 and "error" in body, (url, what, code, body)
                assert cluster.secret not in body["error"]
                code, body = request(url, "/internal/promote", body=b"members=" + promote, headers=headers)
                assert code == 401 and "error" in body, (url, what, code, body)
            code, body = request(url, "/internal/executions/1/output")
            assert code == 401 and "error" in body, (url, code, body)

        # A valid signature is accepted once: a replay of it is refused.
        path = "/internal/executions/424242/output"
        signed = sign_request(cluster.secret, "GET", path)
        assert request(cluster.urls[0], path, headers=signed)[0] == 404        # accepted: nothing runs with that id
        assert request(cluster.urls[0], path, headers=signed)[0] == 401        # replayed

        time.sleep(1.0)   # a voter added by mistake would show by now
        assert membership(cluster) == before
        for node in cluster.nodes:
            assert rogue_raft not in {p["address"] for p in cluster.status(node)["peers"]}
        logs = "".join((cluster.log_dir / f"{n.node_id}.log").read_text(errors="replace") for n in cluster.nodes)
        assert "refused POST /internal/join" in logs and cluster.secret not in logs
    finally:
        cluster.stop()


class RogueMember:
    """An HTTP server announced over zeroconf as a member of the cluster. It records every request it gets; asked
    to prove it knows the secret, it relays the challenge to a real member and passes the answer off as its own."""

    def __init__(self, real_member: str):
        self.real_member = real_member
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((request.method, request.path, dict(request.headers), body))
        if request.path == "/internal/prove":
            async with aiohttp.ClientSession() as session:
                async with session.post(self.real_member + "/internal/prove", data=body,
                                        headers={"Content-Type": request.content_type}) as resp:
                    answer = await resp.json()
            return web.json_response({**answer, "url": self.url})
        return web.json_response({"members": [f"127.0.0.1:{self.port}"], "role": "voter"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def test_join_auto_skips_a_rogue_announcer_which_learns_nothing(tmp_path):
    if not await asyncio.to_thread(loopback_multicast_works):
        pytest.skip("multicast on the loopback interface does not work here")
    name = f"sec-{secrets.token_hex(3)}"
    args = FAST_RAFT + ["--cluster-name", name]
    cluster = await asyncio.to_thread(start_cluster, tmp_path / "c", nodes=3, extra_args=args)
    rogue = RogueMember(cluster.urls[0])
    announcer = Announcer(cluster=name, node_id="n0", http_url=rogue.url, interfaces=["127.0.0.1"])
    try:
        await rogue.start()
        await asyncio.wait_for(announcer.start(), 10)
        deadline = time.monotonic() + 30
        while rogue.url not in await find_members(cluster=name, timeout_s=3, interfaces=["127.0.0.1"]):
            assert time.monotonic() < deadline, "the rogue's announcement is not seen"

        # A joining node browses until shortly after its first answer: on a loaded machine the rogue's answer
        # can come after that, and then this newcomer never met it. Such a newcomer proves nothing here; it is
        # stopped and another joins, until one has found the rogue among the members (at most three).
        for node_id in ("n9", "n10", "n11"):
            newcomer = await asyncio.to_thread(cluster.add_node, join="auto", node_id=node_id, extra_args=args)

            def up(node_id=node_id) -> bool:
                workers = Client(cluster.urls[:1], cluster.token).ok("getWorkers")["workers"]
                return {w["id"]: w["status"] for w in workers}.get(node_id) == "up"
            await asyncio.to_thread(wait_until, up, timeout_s=60, what=f"{node_id} joined the real cluster")
            assert newcomer.raft_addr in {p["address"] for p in cluster.status(cluster.nodes[0])["peers"]}
            log = (cluster.log_dir / f"{node_id}.log").read_text(errors="replace")
            found = next((line for line in log.splitlines() if "through zeroconf:" in line), "")
            if rogue.url in found:
                break
            await asyncio.to_thread(cluster.stop_node, newcomer)
        else:
            pytest.fail(f"no newcomer found the rogue announcer through zeroconf in three tries: {found}")
        assert f"skipping {rogue.url}" in log, log
        assert [(m, p) for m, p, _, _ in rogue.requests] == [("POST", "/internal/prove")], rogue.requests
        for _, _, headers, body in rogue.requests:
            sent = json.dumps(headers).encode() + body
            assert cluster.secret.encode() not in sent
            assert PEER_AUTH_HEADER.lower() not in {h.lower() for h in headers}   # nothing signed went to it
        assert cluster.secret not in log
    finally:
        await asyncio.wait_for(announcer.stop(), 10)
        await rogue.stop()
        await asyncio.to_thread(cluster.stop)
