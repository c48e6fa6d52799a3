"""`pod run --inputs`'s pure parts: one input per line, and arrays within the node's limits."""

from __future__ import annotations

import json

import pytest

from podnode.cli import arrays
from podnode.cli.client import CliError


def test_one_input_per_line_without_the_line_ends(tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"a\r\n\nb c\nlast")
    assert arrays.read_inputs(str(source)) == ["a", "", "b c", "last"]
    source.write_text("only\n")
    assert arrays.read_inputs(str(source)) == ["only"]
    source.write_text("")
    assert arrays.read_inputs(str(source)) == []


def test_an_unreadable_file_is_a_usage_error(tmp_path):
    with pytest.raises(CliError) as err:
        arrays.read_inputs(str(tmp_path / "missing.txt"))
    assert err.value.code == 2


def test_arrays_hold_at_most_the_per_request_maximum_and_keep_the_order():
    inputs = [str(i) for i in range(2 * arrays.MAX_ARRAY + 5)]
    parts = arrays.chunks(inputs)
    assert [len(p) for p in parts] == [arrays.MAX_ARRAY, arrays.MAX_ARRAY, 5]
    assert [x for p in parts for x in p] == inputs


def test_arrays_stay_under_the_body_size():
    big = "x" * 60_000
    parts = arrays.chunks([big] * 400)
    assert len(parts) > 1 and all(len(json.dumps(p)) <= arrays.CHUNK_BYTES for p in parts)
    assert sum(len(p) for p in parts) == 400


def test_the_cli_limit_is_the_nodes():
    from podnode.api.array_actions import MAX_ARRAY, MAX_JSON_BODY_BYTES
    assert arrays.MAX_ARRAY == MAX_ARRAY and arrays.CHUNK_BYTES < MAX_JSON_BODY_BYTES
