"""Which nodes `pod` asks (client.find_urls) and how it moves to the next one that can be reached (Api)."""

from __future__ import annotations

import socket

import pytest

from podnode.cli.client import DEFAULT_URL, Api, CliError, find_urls, retrying


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POD_URL", raising=False)
    return tmp_path


def test_url_flag_then_environment_then_pod_up_file_then_default(here, monkeypatch):
    assert find_urls(None) == [DEFAULT_URL]
    (here / "pod-data").mkdir()
    (here / "pod-data" / "urls").write_text("http://127.0.0.1:9500\nhttp://127.0.0.1:9501\n")
    assert find_urls(None) == ["http://127.0.0.1:9500", "http://127.0.0.1:9501"]
    monkeypatch.setenv("POD_URL", "http://10.0.0.1:8080")
    assert find_urls(None) == ["http://10.0.0.1:8080"]
    assert find_urls("https://node:1") == ["https://node:1"]


def test_a_file_with_nothing_usable_falls_back_to_the_default(here):
    (here / "pod-data").mkdir()
    (here / "pod-data" / "urls").write_bytes(b"\xff\xfe garbage\nftp://x\n\n")
    assert find_urls(None) == [DEFAULT_URL]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]   # closed again at once: connecting is refused


def test_a_node_that_cannot_be_reached_is_left_for_the_next(here):
    dead, also_dead = closed_port(), closed_port()
    api = Api([f"http://127.0.0.1:{dead}/", f"http://127.0.0.1:{also_dead}"])
    asked = []

    def call():
        asked.append(api.url)
        return api.action("getAllActivities", timeout_s=2)
    with pytest.raises(CliError) as info:
        retrying(call, budget_s=0.6)
    assert asked[:3] == [f"http://127.0.0.1:{dead}", f"http://127.0.0.1:{also_dead}", f"http://127.0.0.1:{dead}"]
    assert "cannot reach" in info.value.message


def test_one_url_stays_the_one(here):
    api = Api("http://127.0.0.1:1/")
    assert api.urls == ["http://127.0.0.1:1"] and api.url == "http://127.0.0.1:1"


def test_a_node_out_of_reach_is_said_at_once_and_once_while_retrying(here, capsys):
    api = Api(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(CliError):
        retrying(lambda: api.action("getAllActivities", timeout_s=2), budget_s=2.5)
    err = capsys.readouterr().err
    assert err.count("; trying again for up to") == 1, err
    assert err.startswith("pod: cannot reach http://127.0.0.1:"), err


def test_an_answer_that_is_an_error_is_not_retried_nor_announced(here, capsys):
    def refuse():
        raise CliError("Activity 'x' doesn't exist", 2, http_status=404)
    with pytest.raises(CliError):
        retrying(refuse, budget_s=5)
    assert capsys.readouterr().err == ""
