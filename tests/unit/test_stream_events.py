"""The pure parts of live output: event ids (Last-Event-ID), pieces cut on UTF-8 boundaries and by size, the
events of an output slice, of an attempt and of an ended execution."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podnode.api.stream_events import (
    Position,
    attempt_event,
    attempt_message,
    check_resumable,
    final_events,
    parse_event_id,
    slice_events,
)
from podnode.errors import BadRequest
from podnode.exec.output_slice import OutputSlice, complete_utf8, piece, pieces, take


def record(**fields):
    base = {"id": 7, "stdin": "x", "stdout": "", "stderr": "", "status": "in progress", "activityId": 1,
            "activityName": "a", "submitTime": 1.0, "startTime": 2.0, "finishTime": None, "exitCode": None,
            "workerId": "n2", "attempt": 1}
    return {**base, **fields}


# ---- event ids ------------------------------------------------------------------------------------------
def test_event_ids_round_trip():
    for pos in (Position(), Position(1, 10, 0), Position(3, 0, 99, ended=True)):
        assert parse_event_id(pos.event_id) == pos
    assert Position(2, 5, 6).event_id == "2:5:6"
    assert Position(2, 5, 6, ended=True).event_id == "2:5:6:end"
    assert parse_event_id(None) == Position() and parse_event_id("  ") == Position()
    assert parse_event_id(" 1:2:3 ") == Position(1, 2, 3)


@pytest.mark.parametrize("raw", ["x", "1:2", "1:2:3:4", "1:2:3:END", "-1:0:0", "1:0:0:end:", "1 :0:0",
                                 "1:0\n:0", "1234567890123456:0:0", "١:0:0"])
def test_malformed_event_ids_are_bad_requests(raw):
    with pytest.raises(BadRequest, match="Last-Event-ID"):
        parse_event_id(raw)


def test_an_id_the_execution_has_not_reached_is_refused():
    check_resumable(Position(1, 100, 3), record(attempt=1))
    check_resumable(Position(0), record(attempt=0, status="waiting", workerId=None))
    with pytest.raises(BadRequest, match="attempt 2"):
        check_resumable(Position(2), record(attempt=1))
    with pytest.raises(BadRequest, match="has not ended"):
        check_resumable(Position(1, ended=True), record(attempt=1))
    check_resumable(Position(1, ended=True), record(attempt=1, status="finished"))
    with pytest.raises(BadRequest, match="has not ended"):   # terminated, its output still on the way
        check_resumable(Position(1, ended=True), record(status="terminated", outputPending=True))


# ---- UTF-8 boundaries and pieces -------------------------------------------------------------------------
def test_complete_utf8_stops_before_a_split_character():
    e_acute, euro, smile = "é".encode(), "€".encode(), "😀".encode()
    assert complete_utf8(b"") == 0
    assert complete_utf8(b"abc") == 3
    assert complete_utf8(b"a" + e_acute) == 3 and complete_utf8(b"a" + e_acute[:1]) == 1
    assert complete_utf8(euro) == 3 and complete_utf8(euro[:2]) == 0 and complete_utf8(euro[:1]) == 0
    assert complete_utf8(b"x" + smile) == 5
    for cut in (1, 2, 3):
        assert complete_utf8(b"x" + smile[:cut]) == 1
    assert complete_utf8(b"ab\xff") == 3       # an invalid byte is whole: it decodes to U+FFFD
    assert complete_utf8(b"\x80\x80\x80") == 3


@given(st.text(), st.integers(min_value=1, max_value=4096))
def test_any_split_of_any_text_keeps_characters_whole(text, cut):
    data = text.encode()
    head = data[:cut]
    keep = complete_utf8(head)
    assert keep <= len(head)
    head[:keep].decode()                          # whole characters only
    assert len(head) - keep < 4


@given(st.text(min_size=0, max_size=300), st.integers(min_value=4, max_value=40))
def test_pieces_of_a_text_join_to_it_and_respect_the_size(text, max_bytes):
    data = text.encode()
    start = 0
    got = pieces(text, start, max_bytes=max_bytes)
    assert "".join(t for t, _ in got) == text
    offsets = [at for _, at in got]
    assert offsets == sorted(offsets) and (not got or offsets[-1] == len(data))
    for (chunk, at), before in zip(got, [0, *offsets]):
        assert len(chunk.encode()) == at - before <= max_bytes
    # Resuming from any piece's end gives exactly the rest.
    for k, (_, at) in enumerate(got):
        assert [t for t, _ in pieces(text, at, max_bytes=max_bytes)] == [t for t, _ in got[k + 1:]]


def test_a_piece_waits_for_the_rest_of_a_character_unless_final():
    data = "ab€".encode()
    assert piece(data[:4], 0, final=False) == ("ab", 2)        # € cut after its first 2 bytes: not yet
    assert piece(data, 2, final=False) == ("€", 5)
    assert piece(data[:4], 0, final=True) == ("ab\ufffd", 4)  # the stream ended: as it is
    assert piece(data, 5, final=False) == ("", 5)
    assert piece(b"\xff\xfe\xfd\xfc", 0, final=False) == ("\ufffd" * 4, 4)   # no character in 4 bytes: invalid


def test_take_reads_both_streams_from_their_offsets():
    s = take(b"llo\n", "r\xc3".encode("latin-1"), 2, 10, ended=False)
    assert s == OutputSlice(stdout="llo\n", stderr="r", stdoutAt=6, stderrAt=11, ended=False)
    s = take(b"", b"", 6, 11, ended=True)
    assert s.ended and s.stdout == s.stderr == "" and (s.stdoutAt, s.stderrAt) == (6, 11)
    big = take(b"x" * 100, b"", 0, 0, ended=True, max_bytes=30)
    assert big.stdout == "x" * 30 and big.stdoutAt == 30 and not big.ended   # more to take before the end


def test_an_output_slice_round_trips_through_json_and_refuses_others():
    s = OutputSlice(stdout="a", stderr="", stdoutAt=1, stderrAt=0, ended=False)
    assert OutputSlice.from_json(s.as_json()) == s
    for bad in ({}, {**s.as_json(), "stdoutAt": -1}, {**s.as_json(), "stdout": 3}, {**s.as_json(), "stderrAt": True}):
        with pytest.raises(ValueError):
            OutputSlice.from_json(bad)


# ---- events ----------------------------------------------------------------------------------------------
def test_slice_events_move_the_position_one_stream_at_a_time():
    events, pos = slice_events(Position(1, 5, 2), OutputSlice("out", "err", 8, 5, False))
    assert [(e.name, e.data, e.id) for e in events] == [
        ("output", {"stream": "stdout", "text": "out"}, "1:8:2"),
        ("output", {"stream": "stderr", "text": "err"}, "1:8:5")]
    assert pos == Position(1, 8, 5)
    assert slice_events(pos, OutputSlice("", "", 8, 5, True)) == ([], pos)


def test_attempt_events_say_where_and_why():
    first = attempt_event(record())
    assert first.id == "1:0:0" and first.data["message"] == "attempt 1 on n2"
    moved = attempt_event(record(attempt=2, workerId="n3", lastError="node n2 was lost"))
    assert moved.id == "2:0:0" and moved.data["message"] == "attempt 2 on n3 after node n2 was lost"
    assert moved.data == {"attempt": 2, "workerId": "n3", "reason": "node n2 was lost",
                          "message": "attempt 2 on n3 after node n2 was lost"}
    assert attempt_message(record(attempt=1, lastError="old")) == "attempt 1 on n2"


def test_final_events_send_what_the_reader_lacks_then_the_record():
    ended = record(status="error", exitCode=3, stdout="one\ntwo\n", stderr="e\n", finishTime=3.0)
    events = final_events(Position(1, 4, 0), ended)
    assert [(e.name, e.id) for e in events] == [("output", "1:8:0"), ("output", "1:8:2"), ("end", "1:8:2:end")]
    assert events[0].data == {"stream": "stdout", "text": "two\n"}
    end = events[-1].data
    assert end["exitCode"] == 3 and end["status"] == "error" and "stdout" not in end and "stderr" not in end
    # A reader of an earlier attempt first hears of the last one, then gets its whole output.
    moved = final_events(Position(1, 50, 0), {**ended, "attempt": 2, "workerId": "n3", "lastError": "node n2 was lost"})
    assert [(e.name, e.id) for e in moved][:2] == [("attempt", "2:0:0"), ("output", "2:8:0")]
    # A reader that has everything gets the end alone; output in pieces when large.
    assert [e.name for e in final_events(Position(1, 8, 2), ended)] == ["end"]
    large = final_events(Position(1), {**ended, "stdout": "é" * 100, "stderr": ""}, max_bytes=64)
    assert "".join(e.data["text"] for e in large if e.name == "output") == "é" * 100
    assert [e.id for e in large] == ["1:64:0", "1:128:0", "1:192:0", "1:200:0", "1:200:0:end"]
