"""JUnit XML and the HTML page, from a hand-made report with successes, failures and a baseline."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import numpy as np

from robota.suite import Thresholds
from robota.suite_metrics import encode_gif
from robota.suite_report import html_report, junit_xml, write_suite_outputs
from robota.suite_stats import compare_with_baseline, summarise_scenario


def _row(scenario: str, seed: int, success: bool) -> dict:
    return {
        "scenario": scenario,
        "seed": seed,
        "success": success,
        "steps": 40 if success else 120,
        "time_to_success_s": 4.0 + seed % 3 if success else None,
        "max_contact_force_n": 20.0 + seed % 5,
        "cell_collisions": 0,
        "joint_limit_violations": 0,
        "velocity_limit_violations": 0,
        "tool_path_length_m": 1.2,
        "action_jerk_rms_rad_s3": 50.0,
        "contact_force_trace_n": [0.0, 5.0, 20.0, 3.0],
        "wrist_force_trace_n": [9.8, 12.0, 30.0, 9.8],
    }


def _report() -> dict:
    thresholds = Thresholds(min_success_rate=0.5)
    good = [_row("good", seed, True) for seed in range(6)]
    bad = [_row("bad", seed, seed == 0) for seed in range(6)]
    scenarios = []
    for name, rows in (("good", good), ("bad", bad)):
        summary = {"name": name, **summarise_scenario(rows, thresholds)}
        summary["baseline"] = compare_with_baseline(rows, good, alpha=0.05)
        summary["videos"] = [1] if name == "bad" else []
        summary["passed"] = not summary["threshold_failures"] and not summary["baseline"]["regression"]
        scenarios.append(summary)
    return {
        "suite": {"name": "hand-made", "episodes": 6, "seed_start": 0},
        "policy": "runs/<checkpoint>",
        "policy_kind": "checkpoint",
        "compare_bundle": None,
        "baseline": "baseline.json",
        "passed": all(s["passed"] for s in scenarios),
        "scenarios": scenarios,
        "rows": good + bad,
    }


def test_junit_fails_only_bad_scenario():
    root = ElementTree.fromstring(junit_xml(_report()))
    assert root.get("tests") == "2"
    assert root.get("failures") == "1"
    good, bad = root.findall("./testsuite/testcase")
    assert good.find("failure") is None
    assert "success 6/6" in good.find("system-out").text
    failure = bad.find("failure")
    assert failure.get("message") == "success rate 0.167 is below min_success_rate 0.5"
    # Five lost pairs give p = 0.0625, above alpha, so the baseline adds no reason.
    assert failure.text.splitlines() == [failure.get("message")]


def test_html_shows_times_and_video():
    gif = encode_gif(np.zeros((3, 8, 8, 3), dtype=np.uint8), 5)
    page = html_report(_report(), {("bad", 1): gif})
    # One dot per successful episode: six in `good`, one in `bad`.
    assert page.count("<circle") == 7
    assert page.count("data:image/gif;base64,") == 1
    assert page.count("<polyline") == 12
    assert "runs/&lt;checkpoint&gt;" in page
    assert "5 / 0, p = 0.0625" in page
    assert "<script" not in page


def test_outputs_written_to_folder(tmp_path):
    gif = encode_gif(np.zeros((3, 8, 8, 3), dtype=np.uint8), 5)
    paths = write_suite_outputs(tmp_path / "out", _report(), {("bad", 1): gif})
    assert sorted(paths) == ["html", "json", "junit"]
    for path in paths.values():
        assert path.is_file()
    assert (tmp_path / "out" / "videos" / "bad-1.gif").read_bytes()[:4] == b"GIF8"
