"""The scenario runner: every shipped scenario passes with --expect against the whole simulated
gate; a wrong expectation exits 1 and names itself; a malformed file exits 2 and names the step
(or expectation) and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from simulators.scenario import Verdict, has, in_order
from simulators.scenario_model import Expect, ScenarioError, load_scenario

SCENARIOS = sorted((Path(__file__).parent.parent / "simulators" / "scenarios").glob("*.toml"))


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, timeout=85, check=False
    )


def test_the_typical_gate_ships_its_scenarios() -> None:
    names = {path.stem for path in SCENARIOS}
    assert {"morning_opening", "panic_and_reset", "intrusion_at_night", "police_outage"} <= names
    assert "school_day_rules" in names  # issue 12's rules, in one run
    assert "school_day_report" in names  # and its daily report


LONG_S = {"school_day_rules": 30, "school_day_report": 13}
"""Seconds each scenario takes (`long` in tests/conftest.py); the others take about 5 s."""


@pytest.mark.timeout(90)  # the school day runs about 30 s
@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.stem, marks=pytest.mark.long(LONG_S.get(p.stem, 5))) for p in SCENARIOS],
)
def test_shipped_scenario_passes(path: Path) -> None:
    result = run("-m", "simulators", "scenario", path, "--expect")
    assert result.returncode == 0, result.stdout + result.stderr
    expectations = len(load_scenario(path).expect)
    assert f"{expectations} of {expectations} expectations passed" in result.stdout


REPORT = {
    "date": "2026-12-07",
    "patrols": [{"plan": "gate", "rounds_done": 2, "missed": False}],
    "faults": {"opened": [{"kind": "rule_violation", "entry": "20261207-001"}], "closed": []},
}


@pytest.mark.parametrize(
    ("wanted", "matches"),
    [
        ({}, True),
        ({"date": "2026-12-07"}, True),
        ({"date": "2026-12-08"}, False),
        ({"absent": 1}, False),
        ({"patrols": [{"plan": "gate", "rounds_done": 2}]}, True),  # other keys ignored
        ({"patrols": [{"plan": "gate", "rounds_done": 3}]}, False),
        ({"patrols": []}, False),  # a list is matched item by item, length too
        ({"patrols": [{"plan": "gate"}, {"plan": "gate"}]}, False),
        ({"faults": {"opened": [{"kind": "rule_violation"}], "closed": []}}, True),
        ({"faults": {"closed": [{"kind": "rule_violation"}]}}, False),
        ({"date": {"day": 7}}, False),  # a table never matches a plain value
        ({"patrols": "gate"}, False),
    ],
)
def test_an_expectations_data_is_a_pattern(wanted: dict[str, object], matches: bool) -> None:
    assert has(REPORT, wanted) is matches


WRONG = """
name = "wrong on purpose"
settle_s = 0.2

[[step]]
id = "press"
at = 0.2
do = "pulse"
button = 0

[[expect]]
broker = "police"
type = "alarm.panic"
device = "panic_box"
after = "press"
within = 2.0

[[expect]]            # nobody turned the key
broker = "police"
type = "alarm.reset"
after = "press"
within = 1.0
"""


def test_a_wrong_expectation_exits_1_and_is_named(tmp_path: Path) -> None:
    scenario = tmp_path / "wrong.toml"
    scenario.write_text(WRONG)
    result = run("-m", "gateway", "scenario", scenario, "--expect")  # through `schoolgate`
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL expect 2: police should receive at least 1 alarm.reset" in result.stdout
    assert "FAIL expect 1" not in result.stdout
    assert "1 of 2 expectations passed" in result.stdout


def test_without_expect_the_timeline_only_plays(tmp_path: Path) -> None:
    scenario = tmp_path / "wrong.toml"
    scenario.write_text(WRONG)
    result = run("-m", "simulators", "scenario", scenario)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "step 1 [press]: pulse button=0" in result.stdout
    assert "police  alarm.panic" in result.stdout


def test_a_malformed_scenario_exits_2_naming_step_and_key(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(
        'name = "bad"\n[[step]]\nat = 1\ndo = "press"\n[[step]]\nat = 2\ndo = "card"\nkard = 5\n'
    )
    result = run("-m", "simulators", "scenario", scenario, "--expect")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "step 2 (do = \"card\"): key 'kard': Extra inputs are not permitted" in result.stderr
    assert "step 2 (do = \"card\"): key 'card': Field required" in result.stderr


BASE = 'name = "t"\n[[step]]\nid = "go"\nat = 1\ndo = "press"\n'
EXPECT = '[[expect]]\nbroker = "police"\ntype = "alarm.panic"\n'
CASES = {
    "unknown step": ('[[step]]\ndo = "presss"', "step 2: key 'do': unknown step 'presss' (known: "),
    "no do": ("[[step]]\nat = 2", "step 2: key 'do' is missing"),
    "no such bollard": (
        '[[step]]\ndo = "lower_bollard"\nbollard = 3',
        "step 2 (do = \"lower_bollard\"): key 'bollard': Input should be 1 or 2",
    ),
    "back in time": (
        '[[step]]\nat = 0.5\ndo = "release"',
        "step 2: key 'at': 0.5 is before step 1",
    ),
    "same id": ('[[step]]\nid = "go"\ndo = "release"', "step 2: key 'id': 'go' is also step 1"),
    "no such device": (
        '[[step]]\ndo = "silent"\ndevice = "bollard_9"',
        "step 2 (do = \"silent\"): key 'device': Input should be 'panic_box', ",
    ),
    "within alone": (EXPECT + "within = 2", "expect 1: within needs after"),
    "after no id": (
        EXPECT + 'after = "gone"\nwithin = 2',
        "expect 1: key 'after': no step has id 'gone' (ids: go)",
    ),
    "after no step": (EXPECT + "after = 4", "expect 1: key 'after': no step 4 (1..1)"),
    "no such broker": (
        '[[expect]]\nbroker = "army"\ntype = "alarm.panic"',
        "expect 1: key 'broker'",
    ),
    "count and at_least": (EXPECT + "count = 1\nat_least = 2", "expect 1: give count (exactly) or"),
    "before itself": (EXPECT + "before = 1", "expect 1: key 'before': no other expectation 1"),
    "before nothing": (EXPECT + "before = 3", "expect 1: key 'before': no other expectation 3"),
    "clock with an offset": (
        "[gate]\nclock_start = 2026-12-07T08:00:00+08:00",
        "clock_start: a local time at the site, without an offset",
    ),
    "unknown gate key": ('[gate]\nclock = "now"', "scenario: key 'gate.clock': Extra inputs"),
    "no calendar file": ('[gate]\ncalendar = "nowhere.toml"', "gate: key 'calendar': no file "),
}


@pytest.mark.parametrize(("tail", "problem"), CASES.values(), ids=CASES.keys())
def test_validation_names_the_place(tmp_path: Path, tail: str, problem: str) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(BASE + tail + "\n")
    with pytest.raises(ScenarioError) as raised:
        load_scenario(scenario)
    assert any(problem in line for line in raised.value.problems), raised.value.problems


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('color = "red"\n' + BASE, "scenario: key 'color': Extra inputs are not permitted"),
        ("[[step]]\n", "scenario: key 'name': Field required"),
        ("name = \n", "not valid TOML"),
    ],
    ids=["unknown top key", "no name", "not toml"],
)
def test_validation_of_the_file_as_a_whole(tmp_path: Path, text: str, problem: str) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(text)
    with pytest.raises(ScenarioError) as raised:
        load_scenario(scenario)
    assert any(problem in line for line in raised.value.problems), raised.value.problems


def _verdict(number: int, arrivals: list[float], before: int | None = None) -> Verdict:
    expect = Expect(broker="bureau", type="alarm.panic", before=before)
    return Verdict(number, expect, (0.0, 10.0), arrivals)


@pytest.mark.parametrize(
    ("mine", "theirs", "passed"),
    [([1.0], [2.0], True), ([2.0], [1.0], False), ([1.0], [1.0], False), ([], [1.0], False)],
    ids=["first", "second", "same instant", "never came"],
)
def test_before_needs_this_event_first(
    mine: list[float], theirs: list[float], passed: bool
) -> None:
    judged = in_order([_verdict(1, mine, before=2), _verdict(2, theirs)])
    assert judged[0].passed is passed
    assert judged[1].passed is bool(theirs)
