"""The pure helpers of the foundation fine-tuning and instruction-following benchmarks."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    path = REPO_ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def foundation():
    return _load("foundation_finetune")


@pytest.fixture(scope="module")
def instructions():
    return _load("instruction_following")


def test_demos_needed_interpolates(foundation):
    needed = foundation.scratch_demos_needed([10, 50], [0.1, 0.5], 0.3)

    assert needed.bound == "exact"
    assert needed.demos == pytest.approx(30.0)


def test_demos_needed_at_most_smallest(foundation):
    needed = foundation.scratch_demos_needed([10, 50], [0.4, 0.9], 0.4)

    assert needed.bound == "at_most"
    assert needed.demos == 10.0


def test_demos_needed_beyond_largest(foundation):
    needed = foundation.scratch_demos_needed([10, 50], [0.0, 0.2], 0.6)

    assert needed.bound == "more_than"
    assert needed.demos == 50.0


def test_demos_needed_uses_first_crossing(foundation):
    needed = foundation.scratch_demos_needed([10, 20, 50], [0.0, 0.6, 0.4], 0.3)

    assert needed.bound == "exact"
    assert needed.demos == pytest.approx(15.0)


@pytest.mark.parametrize(
    ("demos", "success"), [([], []), ([10, 50], [0.1]), ([50, 10], [0.1, 0.2]), ([10, 10], [0.1, 0.2])]
)
def test_demos_needed_rejects_bad_curves(foundation, demos, success):
    with pytest.raises(ValueError):
        foundation.scratch_demos_needed(demos, success, 0.5)


def test_efficiency_ratio_divides_by_finetune_demos(foundation):
    ratio = foundation.efficiency_ratio([10, 50], [0.1, 0.5], finetuned_success=0.3, finetuned_demos=10)

    assert ratio["ratio"] == pytest.approx(3.0)
    assert ratio["bound"] == "exact"
    assert ratio["scratch_demos"] == pytest.approx(30.0)


def test_efficiency_ratio_lower_bound(foundation):
    ratio = foundation.efficiency_ratio([10, 50], [0.0, 0.1], finetuned_success=0.4, finetuned_demos=10)

    assert ratio["ratio"] == pytest.approx(5.0)
    assert ratio["bound"] == "more_than"


def test_efficiency_ratio_undefined_at_zero(foundation):
    ratio = foundation.efficiency_ratio([10, 50], [0.0, 0.3], finetuned_success=0.0, finetuned_demos=10)

    assert ratio["ratio"] is None
    assert ratio["bound"] == "undefined"


def test_task_entry_parses(foundation):
    assert foundation.parse_task_entry("machine-tending:40") == ("machine-tending", 40)


@pytest.mark.parametrize("entry", ["sort", "sort:", ":5", "sort:0", "sort:ten"])
def test_task_entry_rejects(foundation, entry):
    with pytest.raises(argparse.ArgumentTypeError, match="TASK:EPISODES"):
        foundation.parse_task_entry(entry)


def test_heldout_in_pretraining_rejected(foundation):
    with pytest.raises(SystemExit):
        foundation.parse_args(["--pretrain", "conveyor:5", "--heldout", "conveyor"])


def test_instruction_scores_count_pairs(instructions):
    outcomes = [
        {"red": "red", "blue": "blue"},
        {"red": "red", "blue": "red"},
        {"red": None, "blue": "blue"},
        {"red": "blue", "blue": "blue"},
    ]

    score = instructions.score_outcomes(outcomes)

    assert score["seeds"] == 4
    assert score["per_target"]["red"]["successes"] == 2
    assert score["per_target"]["blue"]["successes"] == 3
    assert score["both_right"]["successes"] == 1
    assert score["same_bin"]["successes"] == 2
    assert score["right_bin_when_placed"]["trials"] == 7
    assert score["right_bin_when_placed"]["successes"] == 5


def test_instruction_scores_intervals(instructions):
    score = instructions.score_outcomes([{"red": "red", "blue": "blue"}] * 50)

    assert score["both_right"]["rate"] == 1.0
    assert score["both_right"]["wilson_95"][0] == pytest.approx(0.9287, abs=1e-4)
    assert score["both_right"]["wilson_95"][1] == 1.0


def test_instruction_scores_ignore_no_bin(instructions):
    score = instructions.score_outcomes([{"red": None, "blue": None}])

    assert score["same_bin"]["successes"] == 0
    assert score["both_right"]["successes"] == 0
