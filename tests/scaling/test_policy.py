"""Scaling policy: rule parsing and the decisions, one rule per test."""

from __future__ import annotations

import pytest

from podnode.scaling.policy import (
    IDLE_READINGS_TO_SCALE_IN,
    RULES,
    Decision,
    NodeView,
    PolicyError,
    Situation,
    decide,
    format_rules,
    parse_rules,
    predicted_wait_s,
)

NO_CHANGE = "no rule asks for a change"


def node_view(id: str, *, slots: int = 2, busy: int = 0, idle_for_s: float | None = 0.0, is_leader: bool = False,
              removable: bool = True, hourly_price: float = 1.0, voter: bool = False) -> NodeView:
    if busy:
        idle_for_s = None
    return NodeView(id=id, slots=slots, busy=busy, idle_for_s=idle_for_s, is_leader=is_leader,
                    removable=removable, hourly_price=hourly_price, voter=voter)


def cluster(n: int, **kw) -> tuple[NodeView, ...]:
    """n nodes w0..w{n-1}; w0 is the leader and a static seed."""
    return tuple(node_view(f"w{i}", is_leader=i == 0, removable=i != 0, **kw) for i in range(n))


def situation(nodes=(), *, now_s: float = 1000.0, launching: int = 0, queue=(), last_action_s=None,
              idle_readings=None, new_node_price: float = 1.0, new_node_slots: int = 2, seed_nodes: int = 0,
              absent: int = 0, absent_price: float = 0.0) -> Situation:
    return Situation(now_s=now_s, nodes=tuple(nodes), launching=launching, queue_runtime_s=tuple(queue),
                     last_action_s=last_action_s, idle_readings=dict(idle_readings or {}),
                     new_node_price=new_node_price, new_node_slots=new_node_slots, seed_nodes=seed_nodes,
                     absent=absent, absent_price=absent_price)


# ------------------------------------------------------------------------------------------- RULES


def test_rules_table_lists_the_known_keys_with_types_and_ranges():
    assert list(RULES) == ["fixedWorkers", "minWorkers", "maxWorkers", "maxWait", "terminationTime",
                           "cooldown", "maxCostPerHour"]
    assert (RULES["fixedWorkers"].type, RULES["fixedWorkers"].min, RULES["fixedWorkers"].max) == (int, 1, 1000)
    assert (RULES["minWorkers"].min, RULES["maxWorkers"].min) == (0, 1)
    for key in ("maxWait", "terminationTime", "cooldown"):
        assert (RULES[key].type, RULES[key].min, RULES[key].max, RULES[key].unit) == (int, 0, 86_400_000, "ms")
    assert (RULES["maxCostPerHour"].type, RULES["maxCostPerHour"].max) == (float, 1e6)
    assert all(spec.meaning for spec in RULES.values())


# ------------------------------------------------------------------------------------------- parse_rules


@pytest.mark.parametrize("text, expected", [
    ("minWorkers=3", {"minWorkers": 3}),
    ("minWorkers=3,maxWorkers=10", {"minWorkers": 3, "maxWorkers": 10}),
    ("  minWorkers = 3 ,  maxWorkers=10  ", {"minWorkers": 3, "maxWorkers": 10}),
    ("fixedWorkers=5", {"fixedWorkers": 5}),
    ("fixedWorkers=1,maxWait=0,cooldown=86400000", {"fixedWorkers": 1, "maxWait": 0, "cooldown": 86_400_000}),
    ("minWorkers=4,maxWorkers=4", {"minWorkers": 4, "maxWorkers": 4}),
    ("terminationTime=600000", {"terminationTime": 600_000}),
    ("maxCostPerHour=2.5", {"maxCostPerHour": 2.5}),
    ("maxCostPerHour=3", {"maxCostPerHour": 3.0}),
    ("maxCostPerHour=1e6", {"maxCostPerHour": 1e6}),
    ("maxCostPerHour=0", {"maxCostPerHour": 0.0}),
    ("minWorkers=+2", {"minWorkers": 2}),
])
def test_parse_accepts(text, expected):
    assert parse_rules(text) == expected


def test_parse_gives_int_for_int_rules_and_float_for_cost():
    rules = parse_rules("maxWait=5000,maxCostPerHour=3")
    assert type(rules["maxWait"]) is int
    assert type(rules["maxCostPerHour"]) is float


def test_policy_error_is_a_value_error():
    assert issubclass(PolicyError, ValueError)


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_parse_rejects_empty_text(text):
    with pytest.raises(PolicyError, match="no rules given"):
        parse_rules(text)


def test_parse_rejects_item_without_equals():
    with pytest.raises(PolicyError, match="'minWorkers3' has no '='"):
        parse_rules("minWorkers3")


@pytest.mark.parametrize("text", ["minWorkers=1,,maxWorkers=3", "minWorkers=1,", ",minWorkers=1"])
def test_parse_rejects_empty_items(text):
    with pytest.raises(PolicyError, match="empty"):
        parse_rules(text)


def test_parse_rejects_unknown_key_and_names_known_keys():
    with pytest.raises(PolicyError) as err:
        parse_rules("minWorkers=1,workers=3")
    message = str(err.value)
    assert "'workers'" in message
    for key in RULES:
        assert key in message


def test_parse_suggests_the_key_for_a_wrong_case():
    with pytest.raises(PolicyError, match="did you mean 'maxWorkers'"):
        parse_rules("maxworkers=3")


def test_parse_rejects_missing_key():
    with pytest.raises(PolicyError, match="no rule name"):
        parse_rules("=3")


def test_parse_rejects_duplicate_key():
    with pytest.raises(PolicyError, match="'minWorkers' is given twice"):
        parse_rules("minWorkers=1,maxWorkers=5,minWorkers=2")


@pytest.mark.parametrize("text, key", [
    ("minWorkers=abc", "minWorkers"),
    ("minWorkers=", "minWorkers"),
    ("maxWait=1.5", "maxWait"),
    ("maxWait=1e3", "maxWait"),
    ("cooldown=10s", "cooldown"),
    ("maxCostPerHour=nan", "maxCostPerHour"),
    ("maxCostPerHour=inf", "maxCostPerHour"),
    ("maxCostPerHour=cheap", "maxCostPerHour"),
])
def test_parse_rejects_non_numbers(text, key):
    with pytest.raises(PolicyError, match=f"^{key} must be"):
        parse_rules(text)


@pytest.mark.parametrize("text, expected_range", [
    ("fixedWorkers=0", "from 1 to 1000 nodes"),
    ("fixedWorkers=1001", "from 1 to 1000 nodes"),
    ("minWorkers=-1", "from 0 to 1000 nodes"),
    ("maxWorkers=0", "from 1 to 1000 nodes"),
    ("maxWait=-5", "from 0 to 86400000 ms"),
    ("terminationTime=86400001", "from 0 to 86400000 ms"),
    ("cooldown=99999999999", "from 0 to 86400000 ms"),
    ("maxCostPerHour=-0.5", "from 0 to 1000000 per hour"),
    ("maxCostPerHour=1000000.5", "from 0 to 1000000 per hour"),
])
def test_parse_rejects_out_of_range_and_says_range_and_unit(text, expected_range):
    with pytest.raises(PolicyError) as err:
        parse_rules(text)
    assert expected_range in str(err.value)
    assert repr(text.split("=")[1]) in str(err.value)


def test_out_of_range_message_says_what_the_rule_means():
    with pytest.raises(PolicyError, match="predicted wait"):
        parse_rules("maxWait=-1")


def test_parse_rejects_min_above_max():
    with pytest.raises(PolicyError, match=r"minWorkers \(5\) is greater than maxWorkers \(3\)"):
        parse_rules("minWorkers=5,maxWorkers=3")


@pytest.mark.parametrize("text", ["fixedWorkers=3,minWorkers=1", "maxWorkers=9,fixedWorkers=3"])
def test_parse_rejects_fixed_with_min_or_max(text):
    with pytest.raises(PolicyError, match="fixedWorkers can't be combined"):
        parse_rules(text)


# ------------------------------------------------------------------------------------------- format_rules


def test_format_uses_rules_order():
    rules = {"maxCostPerHour": 2.5, "cooldown": 30000, "maxWorkers": 10, "minWorkers": 3}
    assert format_rules(rules) == "minWorkers=3,maxWorkers=10,cooldown=30000,maxCostPerHour=2.5"


def test_format_writes_whole_costs_without_decimal_point():
    assert format_rules({"maxCostPerHour": 3.0}) == "maxCostPerHour=3"


@pytest.mark.parametrize("text", [
    "minWorkers=3,maxWorkers=10,maxWait=60000,terminationTime=600000,cooldown=30000,maxCostPerHour=12.75",
    " cooldown=5 , fixedWorkers=4 ",
    "maxCostPerHour=0.1",
    "maxCostPerHour=1000000",
])
def test_format_round_trips(text):
    rules = parse_rules(text)
    canonical = format_rules(rules)
    assert parse_rules(canonical) == rules
    assert format_rules(parse_rules(canonical)) == canonical


def test_format_rejects_unknown_keys():
    with pytest.raises(PolicyError, match="unknown rules"):
        format_rules({"minWorkers": 1, "bogus": 2})


# ------------------------------------------------------------------------------------------- decide: basics


def test_no_rules_no_change():
    d = decide({}, situation(cluster(3)))
    assert d == Decision(reason=NO_CHANGE, idle_readings={"w0": 0, "w1": 0, "w2": 0})


def test_reason_is_always_set():
    cases = [({}, situation()), ({"minWorkers": 5}, situation(cluster(3))),
             ({"cooldown": 1000}, situation(cluster(3), last_action_s=999.5))]
    for rules, s in cases:
        assert decide(rules, s).reason


def test_decide_does_not_mutate_the_situation():
    s = situation(cluster(4), idle_readings={"w1": 2, "gone": 5})
    decide({"terminationTime": 0}, s)
    assert s.idle_readings == {"w1": 2, "gone": 5}


# ------------------------------------------------------------------------------------------- idle counters


def test_idle_past_termination_time_counts_up():
    nodes = (node_view("a", idle_for_s=700), node_view("b", idle_for_s=10))
    d = decide({"terminationTime": 600_000}, situation(nodes, idle_readings={"a": 1, "b": 0}))
    assert d.idle_readings == {"a": 2, "b": 0}


def test_idle_exactly_termination_time_counts():
    d = decide({"terminationTime": 600_000}, situation([node_view("a", idle_for_s=600.0)]))
    assert d.idle_readings == {"a": 1}


def test_busy_node_resets_counter():
    d = decide({"terminationTime": 0}, situation([node_view("a", busy=1)], idle_readings={"a": 2}))
    assert d.idle_readings == {"a": 0}


def test_node_not_idle_long_enough_resets_counter():
    d = decide({"terminationTime": 60_000}, situation([node_view("a", idle_for_s=59)], idle_readings={"a": 2}))
    assert d.idle_readings == {"a": 0}


def test_absent_nodes_are_dropped_from_counters():
    d = decide({"terminationTime": 0}, situation([node_view("a")], idle_readings={"a": 1, "lost": 4}))
    assert d.idle_readings == {"a": 2}


def test_without_termination_time_counters_stay_zero():
    d = decide({"minWorkers": 1}, situation([node_view("a", idle_for_s=1e6)], idle_readings={"a": 5}))
    assert d.idle_readings == {"a": 0}


def test_counters_update_during_cooldown():
    s = situation([node_view("a", idle_for_s=100)], idle_readings={"a": 1}, last_action_s=999.0)
    d = decide({"terminationTime": 1000, "cooldown": 60_000}, s)
    assert "cooldown" in d.reason
    assert d.idle_readings == {"a": 2}


def test_counters_update_when_launching():
    s = situation([node_view("a", idle_for_s=100)], idle_readings={"a": 1})
    d = decide({"terminationTime": 1000, "minWorkers": 3}, s)
    assert d.launch == 2
    assert d.idle_readings == {"a": 2}


# ------------------------------------------------------------------------------------------- cooldown


def test_cooldown_blocks_action_and_says_seconds_left():
    s = situation(cluster(1), now_s=1000.0, last_action_s=990.0)
    d = decide({"minWorkers": 5, "cooldown": 30_000}, s)
    assert (d.launch, d.destroy) == (0, ())
    assert "cooldown" in d.reason and "20.0 s left" in d.reason


def test_cooldown_over_allows_action():
    s = situation(cluster(1), now_s=1000.0, last_action_s=970.0)
    assert decide({"minWorkers": 5, "cooldown": 30_000}, s).launch == 4


def test_no_last_action_means_no_cooldown():
    assert decide({"minWorkers": 5, "cooldown": 30_000}, situation(cluster(1))).launch == 4


def test_last_action_without_cooldown_rule_does_not_block():
    assert decide({"minWorkers": 5}, situation(cluster(1), last_action_s=999.9)).launch == 4


def test_cooldown_blocks_scale_in_too():
    s = situation(cluster(5, idle_for_s=100), idle_readings={f"w{i}": 5 for i in range(5)}, last_action_s=999)
    d = decide({"terminationTime": 0, "cooldown": 10_000}, s)
    assert d.destroy == ()
    assert "cooldown" in d.reason


# ------------------------------------------------------------------------------------------- fixedWorkers


def test_fixed_launches_up_to_n():
    d = decide({"fixedWorkers": 5}, situation(cluster(2)))
    assert d.launch == 3
    assert "fixedWorkers=5" in d.reason


def test_fixed_counts_launching_nodes():
    assert decide({"fixedWorkers": 5}, situation(cluster(2), launching=2)).launch == 1
    d = decide({"fixedWorkers": 5}, situation(cluster(2), launching=3))
    assert (d.launch, d.destroy) == (0, ())
    assert NO_CHANGE in d.reason


def test_fixed_destroys_one_surplus_most_idle_first():
    nodes = (node_view("lead", is_leader=True, idle_for_s=9999), node_view("a", idle_for_s=10),
             node_view("b", idle_for_s=500), node_view("c", idle_for_s=100))
    d = decide({"fixedWorkers": 2}, situation(nodes))
    assert d.destroy == ("b",)
    assert d.launch == 0


def test_fixed_never_destroys_leader_busy_or_static():
    nodes = (node_view("lead", is_leader=True, idle_for_s=9999), node_view("busy", busy=2),
             node_view("seed", removable=False, idle_for_s=9999), node_view("ok", idle_for_s=1))
    d = decide({"fixedWorkers": 1}, situation(nodes))
    assert d.destroy == ("ok",)


def test_fixed_surplus_without_candidates_explains():
    nodes = (node_view("lead", is_leader=True), node_view("busy", busy=1), node_view("seed", removable=False),
             node_view("seed2", removable=False))
    d = decide({"fixedWorkers": 1}, situation(nodes))
    assert d.destroy == () and d.launch == 0
    assert "no removable, idle, non-leader node" in d.reason


def test_fixed_governs_alone():
    rules = {"fixedWorkers": 3, "maxWait": 0, "terminationTime": 0}
    s = situation(cluster(3, idle_for_s=100), queue=[1000.0] * 10, idle_readings={"w1": 9, "w2": 9})
    d = decide(rules, s)
    assert (d.launch, d.destroy) == (0, ())


def test_fixed_launch_respects_cost_cap():
    d = decide({"fixedWorkers": 6, "maxCostPerHour": 4.0}, situation(cluster(2)))
    assert d.launch == 2
    assert "maxCostPerHour" in d.reason


# ------------------------------------------------------------------------------------------- minWorkers


def test_below_min_launches_deficit():
    d = decide({"minWorkers": 4}, situation(cluster(1)))
    assert d.launch == 3
    assert "minWorkers=4" in d.reason


def test_min_counts_launching():
    assert decide({"minWorkers": 4}, situation(cluster(1), launching=2)).launch == 1
    assert decide({"minWorkers": 4}, situation(cluster(1), launching=3)).reason == NO_CHANGE


def test_min_from_zero_nodes():
    assert decide({"minWorkers": 3}, situation()).launch == 3


def test_min_capped_by_max_workers_in_unparsed_rules():
    assert decide({"minWorkers": 5, "maxWorkers": 3}, situation(cluster(1))).launch == 2


# ------------------------------------------------------------------------------------------- scale out


def test_predicted_wait_spreads_queue_over_slots_including_launching():
    s = situation(cluster(2, slots=2), launching=1, new_node_slots=4, queue=[80.0, 80.0])
    assert predicted_wait_s(s) == pytest.approx(160 / 8)
    assert predicted_wait_s(s, 2) == pytest.approx(160 / 16)


def test_predicted_wait_with_no_slots_divides_by_one():
    assert predicted_wait_s(situation(queue=[5.0, 5.0])) == 10.0


def test_queue_under_max_wait_does_not_launch():
    s = situation(cluster(3, slots=2), queue=[60.0] * 6)  # 360 s / 6 slots = 60 s
    d = decide({"maxWait": 60_000}, s)
    assert d.launch == 0
    assert d.destroy == ()


def test_queue_over_max_wait_launches_smallest_k():
    s = situation(cluster(3, slots=2), queue=[100.0] * 6, new_node_slots=2)  # 600 s / 6 = 100 s
    d = decide({"maxWait": 60_000}, s)
    assert d.launch == 2  # 600 / 10 = 60 <= 60; 600 / 8 = 75 > 60
    assert "maxWait" in d.reason and "predicted wait 100.0 s" in d.reason


def test_scale_out_counts_launching_slots():
    s = situation(cluster(3, slots=2), launching=2, queue=[100.0] * 6, new_node_slots=2)  # 600 / 10 = 60
    assert decide({"maxWait": 60_000}, s).launch == 0


def test_scale_out_uses_new_node_slots():
    s = situation(cluster(3, slots=2), queue=[100.0] * 6, new_node_slots=8)  # 600 / 14 < 60
    assert decide({"maxWait": 60_000}, s).launch == 1


def test_scale_out_capped_by_max_workers():
    s = situation(cluster(3, slots=1), queue=[1000.0] * 10)
    d = decide({"maxWait": 1000, "maxWorkers": 5}, s)
    assert d.launch == 2


def test_never_launch_at_max_workers():
    s = situation(cluster(5, slots=1), queue=[1000.0] * 10)
    d = decide({"maxWait": 1000, "maxWorkers": 5, "minWorkers": 5}, s)
    assert d.launch == 0
    assert "maxWorkers=5" in d.reason


def test_never_launch_above_max_workers_counting_launching():
    s = situation(cluster(3, slots=1), launching=3, queue=[1000.0] * 10)
    assert decide({"maxWait": 1000, "maxWorkers": 5}, s).launch == 0


def test_max_workers_counts_draining_and_lost_nodes():
    # 3 up and 1 draining (it is there until it leaves): a new backlog must not bring a 5th under maxWorkers=4.
    rules = {"maxWorkers": 4, "maxWait": 0}
    d = decide(rules, situation(cluster(3), absent=1, queue=[60.0] * 8))
    assert d.launch == 0
    assert "4 nodes (with 1 draining or lost) already reach maxWorkers=4" in d.reason
    assert decide(rules, situation(cluster(2), absent=1, queue=[60.0] * 8)).launch == 1


def test_cost_cap_counts_draining_and_lost_nodes():
    d = decide({"maxWait": 0, "maxWorkers": 10, "maxCostPerHour": 3.0},
               situation(cluster(2), absent=1, absent_price=1.0, queue=[60.0] * 8))
    assert d.launch == 0 and "maxCostPerHour" in d.reason


def test_without_max_wait_queue_never_launches():
    s = situation(cluster(3, slots=1), queue=[1e6] * 100)
    d = decide({"maxWorkers": 10, "terminationTime": 0}, s)
    assert d.launch == 0


def test_max_wait_zero_launches_up_to_max_workers():
    s = situation(cluster(3, slots=1), queue=[10.0])
    assert decide({"maxWait": 0, "maxWorkers": 7}, s).launch == 4


def test_scale_out_and_min_take_the_larger():
    s = situation(cluster(1, slots=2), queue=[100.0] * 2, new_node_slots=2)  # 200 / 2 = 100 s
    d = decide({"minWorkers": 2, "maxWait": 50_000}, s)
    assert d.launch == 1  # 200 / 4 = 50; min also wants 1
    d = decide({"minWorkers": 4, "maxWait": 50_000}, s)
    assert d.launch == 3


def test_new_node_without_slots_cannot_help():
    s = situation(cluster(3, slots=1), queue=[100.0] * 3, new_node_slots=0)
    d = decide({"maxWait": 10_000}, s)
    assert d.launch == 0
    assert "no slots" in d.reason


# ------------------------------------------------------------------------------------------- cost cap


def test_cost_cap_reduces_launch_and_says_so():
    s = situation(cluster(3, hourly_price=1.0), new_node_price=2.0)  # spend 3/h
    d = decide({"minWorkers": 6, "maxCostPerHour": 8.0}, s)
    assert d.launch == 2  # 3 + 2*2 = 7 <= 8; 3 + 3*2 = 9 > 8
    assert "maxCostPerHour=8" in d.reason and "2 of 3" in d.reason


def test_cost_cap_counts_launching_nodes():
    s = situation(cluster(3, hourly_price=1.0), launching=2, new_node_price=2.0)  # 3 + 4 = 7/h
    d = decide({"minWorkers": 8, "maxCostPerHour": 8.0}, s)
    assert d.launch == 0
    assert "maxCostPerHour" in d.reason


def test_cost_cap_blocks_wanted_scale_out_and_says_so():
    s = situation(cluster(3, slots=1, hourly_price=1.0), queue=[100.0] * 3, new_node_price=5.0)
    d = decide({"maxWait": 10_000, "maxCostPerHour": 7.0}, s)
    assert d.launch == 0
    assert "maxWait" in d.reason and "maxCostPerHour=7" in d.reason and "0 of" in d.reason


def test_cost_cap_exactly_reached_is_allowed():
    s = situation(cluster(1, hourly_price=0.1), new_node_price=0.1)
    assert decide({"minWorkers": 3, "maxCostPerHour": 0.3}, s).launch == 2


def test_cost_cap_already_exceeded_launches_nothing():
    s = situation(cluster(3, hourly_price=5.0))
    assert decide({"minWorkers": 4, "maxCostPerHour": 10.0}, s).launch == 0


def test_free_nodes_are_not_limited_by_cost():
    s = situation(cluster(1, hourly_price=0.0), new_node_price=0.0)
    assert decide({"minWorkers": 4, "maxCostPerHour": 0.0}, s).launch == 3


def test_cost_cap_that_fits_is_not_mentioned():
    d = decide({"minWorkers": 4, "maxCostPerHour": 100.0}, situation(cluster(1)))
    assert d.launch == 3
    assert "maxCostPerHour" not in d.reason


# ------------------------------------------------------------------------------------------- scale in


def ripe(n: int) -> dict[str, int]:
    return {f"w{i}": IDLE_READINGS_TO_SCALE_IN - 1 for i in range(n)}


def test_scale_in_destroys_one_longest_idle():
    nodes = (node_view("w0", is_leader=True, removable=False, idle_for_s=900), node_view("w1", idle_for_s=700),
             node_view("w2", idle_for_s=800), node_view("w3", idle_for_s=650), node_view("w4", idle_for_s=750))
    d = decide({"terminationTime": 600_000}, situation(nodes, idle_readings=ripe(5)))
    assert d.destroy == ("w2",)
    assert d.launch == 0
    assert "terminationTime" in d.reason


def test_scale_in_needs_three_consecutive_readings():
    rules = {"terminationTime": 0}
    readings: dict[str, int] = {}
    for _ in range(IDLE_READINGS_TO_SCALE_IN - 1):
        d = decide(rules, situation(cluster(5, idle_for_s=10), idle_readings=readings))
        assert d.destroy == ()
        readings = d.idle_readings
    d = decide(rules, situation(cluster(5, idle_for_s=10), idle_readings=readings))
    assert len(d.destroy) == 1


def test_no_flapping_one_busy_reading_restarts_the_count():
    rules = {"terminationTime": 0}
    idle = (node_view("lead", is_leader=True), node_view("a"), node_view("b"), node_view("c", removable=False))
    busy = (idle[0], node_view("a", busy=1), idle[2], idle[3])
    readings: dict[str, int] = {}
    for nodes in (idle, idle, busy, idle, idle):
        d = decide(rules, situation(nodes, idle_readings=readings))
        readings = d.idle_readings
        assert "a" not in d.destroy
    assert readings["a"] == 2
    d = decide(rules, situation(idle, idle_readings=readings))
    assert d.idle_readings["a"] == IDLE_READINGS_TO_SCALE_IN
    assert d.destroy == ("a",)  # the third consecutive idle reading; ties on idle time go by id


def test_busy_flip_resets_before_destroy():
    rules = {"terminationTime": 0}
    nodes = (node_view("lead", is_leader=True), node_view("a", busy=1), node_view("s1", removable=False),
             node_view("s2", removable=False))
    d = decide(rules, situation(nodes, idle_readings={"a": 10}))
    assert d.destroy == ()
    assert d.idle_readings["a"] == 0


def test_scale_in_goes_down_to_min_workers_not_three_nodes():
    # pod up --nodes 1, minWorkers=1, grown to 3: both launched nodes go, one per evaluation, down to 1.
    rules = {"terminationTime": 8000, "minWorkers": 1, "maxWorkers": 3, "maxWait": 1000}
    nodes = (node_view("n1", is_leader=True, removable=False, idle_for_s=60),
             node_view("wa", idle_for_s=60), node_view("wb", idle_for_s=50))
    readings = {"n1": 5, "wa": 5, "wb": 5}
    d = decide(rules, situation(nodes, idle_readings=readings, seed_nodes=1))
    assert d.destroy == ("wa",)
    d = decide(rules, situation(nodes[::2], idle_readings=d.idle_readings, seed_nodes=1))
    assert d.destroy == ("wb",)
    d = decide(rules, situation(nodes[:1], idle_readings=d.idle_readings, seed_nodes=1))
    assert d.destroy == () and d.launch == 0


def test_scale_in_floor_is_the_seed_nodes_when_min_workers_is_lower():
    # Three seeds, one of them lost (it still counts: it may come back); the launched node stands in for it.
    nodes = (node_view("n1", is_leader=True, removable=False), node_view("n2", removable=False), node_view("w1"))
    d = decide({"terminationTime": 0, "minWorkers": 1}, situation(nodes, idle_readings=ripe(3), seed_nodes=3))
    assert d.destroy == ()
    assert "floor" in d.reason and "3 seed nodes" in d.reason and NO_CHANGE in d.reason
    assert decide({"terminationTime": 0, "minWorkers": 1},
                  situation(nodes, idle_readings={"w1": 9}, seed_nodes=2)).destroy == ("w1",)


def test_scale_in_down_to_zero_min_keeps_the_leader():
    nodes = (node_view("lead", is_leader=True, idle_for_s=1e6), node_view("w1"))
    d = decide({"terminationTime": 0}, situation(nodes, idle_readings={"lead": 9, "w1": 9}))
    assert d.destroy == ("w1",)
    d = decide({"terminationTime": 0}, situation(nodes[:1], idle_readings={"lead": 9}))
    assert d.destroy == ()


def test_scale_in_takes_observers_before_voters():
    nodes = (node_view("n1", is_leader=True, removable=False), node_view("wv", idle_for_s=900, voter=True),
             node_view("wo", idle_for_s=100))
    d = decide({"terminationTime": 0}, situation(nodes, idle_readings={"wv": 9, "wo": 9}, seed_nodes=1))
    assert d.destroy == ("wo",)
    d = decide({"terminationTime": 0}, situation(nodes[:2], idle_readings={"wv": 9}, seed_nodes=1))
    assert d.destroy == ("wv",)


def test_scale_in_floor_is_min_workers_when_higher():
    d = decide({"terminationTime": 0, "minWorkers": 5}, situation(cluster(5), idle_readings=ripe(5)))
    assert d.destroy == ()
    assert decide({"terminationTime": 0, "minWorkers": 5},
                  situation(cluster(6), idle_readings=ripe(6))).destroy != ()


def test_scale_in_floor_counts_launching():
    d = decide({"terminationTime": 0, "minWorkers": 3}, situation(cluster(3), launching=1, idle_readings=ripe(3)))
    assert len(d.destroy) == 1
    d = decide({"terminationTime": 0, "minWorkers": 3}, situation(cluster(3), idle_readings=ripe(3)))
    assert d.destroy == ()


def test_scale_in_never_destroys_leader():
    nodes = (node_view("lead", is_leader=True, idle_for_s=1e6), node_view("s1", removable=False),
             node_view("s2", removable=False), node_view("s3", removable=False))
    d = decide({"terminationTime": 0}, situation(nodes, idle_readings={"lead": 9}))
    assert d.destroy == ()


def test_scale_in_never_destroys_static_seed():
    nodes = (node_view("lead", is_leader=True), node_view("seed", removable=False, idle_for_s=1e6),
             node_view("s2", removable=False), node_view("s3", removable=False))
    assert decide({"terminationTime": 0}, situation(nodes, idle_readings={"seed": 9})).destroy == ()


def test_scale_in_never_destroys_busy_worker():
    nodes = (node_view("lead", is_leader=True), node_view("b", busy=1), node_view("s2", removable=False),
             node_view("s3", removable=False))
    assert decide({"terminationTime": 0}, situation(nodes, idle_readings={"b": 9})).destroy == ()


def test_scale_in_waits_for_empty_queue():
    s = situation(cluster(5, slots=4), queue=[1.0], idle_readings=ripe(5))
    d = decide({"terminationTime": 0, "maxWait": 60_000}, s)
    assert d.destroy == () and d.launch == 0
    assert NO_CHANGE in d.reason


def test_scale_in_not_while_launch_is_wanted():
    s = situation(cluster(4), idle_readings=ripe(4))
    d = decide({"terminationTime": 0, "minWorkers": 6}, s)
    assert d.launch == 2 and d.destroy == ()


def test_without_termination_time_no_scale_in():
    d = decide({"minWorkers": 0}, situation(cluster(6, idle_for_s=1e6), idle_readings={"w1": 99}))
    assert d == Decision(reason=NO_CHANGE, idle_readings={f"w{i}": 0 for i in range(6)})


def test_fixed_goes_down_to_n_even_below_three():
    nodes = (node_view("lead", is_leader=True, removable=False), node_view("w1", idle_for_s=5), node_view("w2"))
    d = decide({"fixedWorkers": 1}, situation(nodes))
    assert d.destroy == ("w1",) and d.launch == 0


def test_fixed_counts_draining_and_lost_nodes_against_n():
    d = decide({"fixedWorkers": 4}, situation(cluster(2), absent=1))
    assert d.launch == 1
    d = decide({"fixedWorkers": 3}, situation(cluster(2), absent=1))
    assert (d.launch, d.destroy) == (0, ()) and "draining or lost" in d.reason


def test_runtime_estimate_before_and_after_the_first_finish():
    from podnode.raft import commands as C
    from podnode.raft.state import State
    from podnode.scaling.autoscaler import runtime_estimate_s

    state = State()
    state.apply(C.NodeUp(node="n1", raftAddr="a:1", httpUrl="http://a", slots=2, now=0.0))
    state.apply(C.ActivityNew(name="a", url="u", now=0.0))
    state.apply(C.InstallAssign(assignments=[["a", "n1"]], now=0.0))
    state.apply(C.InstallDone(name="a", node="n1", ok=True, now=0.0))
    assert runtime_estimate_s(state, "a", 100.0) == 1.0            # nothing known yet
    state.apply(C.ExecNew(name="a", now=10.0, node="n1"))
    assert runtime_estimate_s(state, "a", 25.0) == 15.0            # it has already run 15 s
    state.apply(C.ExecFinish(now=30.0, reports=[C.Report(id=1, attempt=1, node="n1", exitCode=0)]))
    assert runtime_estimate_s(state, "a", 99.0) == 20.0            # the mean of what finished
