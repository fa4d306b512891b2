"""Suite files: matrix expansion, defaults and errors that name the file, the key and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from robota.errors import RobotaError, UnknownNameError
from robota.suite import load_suite

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "suites" / "pick_place_smoke.toml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return path


def test_example_suite_expands_matrix():
    suite = load_suite(EXAMPLE)
    assert suite.name == "pick-place-smoke"
    assert len(suite.scenarios) == 2 * 5
    assert suite.scenarios[0].name == "pick-place/ur5e/nominal/none"
    names = [scenario.name for scenario in suite.scenarios]
    assert "pick-place/ur5e/wide/blue-part" in names
    assert suite.seeds[:2] == [1_000_000, 1_000_001]
    assert suite.thresholds.min_success_rate == 0.8


def test_named_perturbation_keeps_parameters(tmp_path):
    path = _write(
        tmp_path,
        '[matrix]\nperturbations = ["slow"]\n[perturbations.slow]\nkind = "latency"\nsteps = 3\n',
    )
    scenario = load_suite(path).scenarios[0]
    assert scenario.perturbation == "slow"
    assert scenario.perturbation_kind == "latency"
    assert dict(scenario.perturbation_parameters) == {"steps": 3}


def test_defaults_without_tables(tmp_path):
    suite = load_suite(_write(tmp_path, ""))
    assert [s.name for s in suite.scenarios] == ["pick-place/ur5e/nominal/none"]
    assert suite.episodes == 10
    assert suite.alpha == 0.05


@pytest.mark.parametrize(
    ("text", "where", "suggestion"),
    [
        ("[suite]\nepisods = 3\n", "key in [suite]", "episodes"),
        ("[matrix]\nperturbation = []\n", "key in [matrix]", "perturbations"),
        ("[matrix]\ntasks = [\"pick-plac\"]\n", "[matrix] tasks entry", "pick-place"),
        ("[matrix]\nrobots = [\"ur5\"]\n", "[matrix] robots entry", "ur5e"),
        ("[matrix]\nrandomization = [\"wid\"]\n", "[matrix] randomization entry", "wide"),
        ("[matrix]\nperturbations = [\"latncy\"]\n", "[matrix] perturbations entry", "latency"),
        ("[thresholds]\nmin_sucess_rate = 0.5\n", "key in [thresholds]", "min_success_rate"),
        ("[tresholds]\n", "top-level table", "thresholds"),
        ("[perturbations.x]\nkind = \"lightning\"\n", "[perturbations.x]", "lighting"),
        ("[perturbations.x]\nkind = \"latency\"\nstep = 2\n", "[perturbations.x]", "steps"),
    ],
)
def test_unknown_name_suggests(tmp_path, text, where, suggestion):
    path = _write(tmp_path, text)
    with pytest.raises(UnknownNameError) as caught:
        load_suite(path)
    message = str(caught.value)
    assert str(path) in message
    assert where in message
    assert f"Did you mean {suggestion!r}" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[suite]\nepisodes = 0\n", "episodes must be an integer of at least 1"),
        ("[suite]\nalpha = 1.5\n", "alpha must lie in (0, 1)"),
        ("[thresholds]\nmin_success_rate = 2\n", "min_success_rate must lie in [0, 1]"),
        ("[thresholds]\nmax_contact_force_n = -1\n", "must be a non-negative number"),
        ("[matrix]\nperturbations = []\n", "must be a non-empty list"),
        ("[matrix]\nperturbations = [\"none\", \"none\"]\n", "lists a name twice"),
        ("[perturbations.x]\nsteps = 2\n", "must be a table with a `kind`"),
        ("[perturbations.x]\nkind = \"lighting\"\ntint_rgb = [1, 2]\n", "list of 3 numbers"),
        ("[perturbations.x]\nkind = \"part-colour\"\nrgba = [0, 0, 255, 1]\n", "must lie in [0, 1]"),
        ("[perturbations.x]\nkind = \"latency\"\nsteps = 1.5\n", "whole number of control steps"),
        ("[suite\n", "is not valid TOML"),
    ],
)
def test_invalid_value_names_file(tmp_path, text, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(RobotaError) as caught:
        load_suite(path)
    assert fragment in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_file_names_example(tmp_path):
    with pytest.raises(RobotaError, match="pick_place_smoke.toml"):
        load_suite(tmp_path / "absent.toml")
