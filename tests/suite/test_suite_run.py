"""`robota suite run` end to end with a tiny trained policy, its bundle and a baseline.

The tiny policy (10 optimiser steps) fails every episode, which is what the threshold and
baseline tests need: its outcome is known without training a competent policy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from robota.cli import build_parser
from robota.console import configure_logging
from robota.errors import RobotaError
from robota.suite_cli import register

pytestmark = pytest.mark.slow

SUITE = """
[suite]
name = "tiny"
episodes = {episodes}
max_episode_steps = 12
failure_videos = 1

[matrix]
randomization = ["nominal", "wide"]
perturbations = ["none", "latency"]

[thresholds]
{thresholds}
"""


def run_cli(argv: list[str]) -> int:
    """Run `robota suite ...` through the real parser, as the CLI will once it is wired in."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    if "suite" not in commands.choices:
        register(commands)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        return args.handler(args)
    except RobotaError:
        return 2


@pytest.fixture(scope="module")
def policies(tmp_path_factory) -> dict[str, Path]:
    from robota.export import export_bundle
    from robota.record import RecordConfig, record
    from robota.train import TrainConfig, train

    root = tmp_path_factory.mktemp("suite-policy")
    record(RecordConfig(output=root / "dataset", episodes=2, image_size=32))
    checkpoint = train(
        TrainConfig(dataset=root / "dataset", output=root / "checkpoint", steps=10, batch_size=4)
    )
    export_bundle(checkpoint, root / "bundle")
    return {"root": root, "checkpoint": checkpoint, "bundle": root / "bundle"}


def write_suite(folder: Path, episodes: int = 2, thresholds: str = "") -> Path:
    path = folder / "suite.toml"
    path.write_text(SUITE.format(episodes=episodes, thresholds=thresholds))
    return path


@pytest.fixture(scope="module")
def compared(policies) -> dict:
    """A run of the checkpoint with its bundle compared, on two workers, that misses a threshold."""
    folder = policies["root"] / "compared"
    folder.mkdir()
    suite = write_suite(folder, thresholds="min_success_rate = 0.5")
    status = run_cli(
        [
            "suite", "run", str(suite), "--policy", str(policies["checkpoint"]),
            "--compare-bundle", str(policies["bundle"]), "--workers", "2",
            "--output", str(folder / "out"),
        ]
    )
    report = json.loads((folder / "out" / "report.json").read_text())
    return {"status": status, "report": report, "out": folder / "out"}


@pytest.mark.multiprocess
def test_missed_threshold_exits_one(compared):
    assert compared["status"] == 1
    assert compared["report"]["passed"] is False
    for scenario in compared["report"]["scenarios"]:
        assert scenario["threshold_failures"] == [
            "success rate 0.000 is below min_success_rate 0.5"
        ]


@pytest.mark.multiprocess
def test_rows_keep_seed_and_draws(compared):
    rows = compared["report"]["rows"]
    assert len(rows) == 4 * 2
    assert [row["seed"] for row in rows[:2]] == [1_000_000, 1_000_001]
    assert rows[0]["scenario"] == "pick-place/ur5e/nominal/none"
    assert {"part_x_m", "part_yaw_rad"} <= set(rows[0]["randomization"])
    wide = [row for row in rows if "/wide/" in row["scenario"]]
    assert all("part_mass_scale" in row["randomization"] for row in wide)
    for key in ("max_contact_force_n", "cell_collisions", "joint_limit_violations",
                "velocity_limit_violations", "tool_path_length_m", "action_jerk_rms_rad_s3"):
        assert key in rows[0], key
    # The same seed draws the same scene in every scenario.
    assert rows[0]["randomization"]["part_x_m"] == wide[0]["randomization"]["part_x_m"]


@pytest.mark.multiprocess
def test_bundle_agrees_with_checkpoint(compared):
    for scenario in compared["report"]["scenarios"]:
        agreement = scenario["bundle_agreement"]
        assert agreement["same_success"] == agreement["episodes"] == 2
        assert agreement["action_max_abs_diff"] < 1e-3


@pytest.mark.multiprocess
def test_junit_has_one_case_per_scenario(compared):
    root = ElementTree.parse(compared["out"] / "junit.xml").getroot()
    cases = root.findall("./testsuite/testcase")
    assert [case.get("name") for case in cases] == [
        "pick-place/ur5e/nominal/none",
        "pick-place/ur5e/nominal/latency",
        "pick-place/ur5e/wide/none",
        "pick-place/ur5e/wide/latency",
    ]
    assert all(case.find("failure") is not None for case in cases)


@pytest.mark.multiprocess
def test_one_video_per_failing_scenario(compared):
    videos = sorted(p.name for p in (compared["out"] / "videos").iterdir())
    assert len(videos) == 4
    assert videos[0] == "pick-place_ur5e_nominal_latency-1000000.gif"
    html = (compared["out"] / "report.html").read_text()
    assert html.count("data:image/gif;base64,") == 4
    assert "<script" not in html


def test_no_threshold_passes_with_zero(policies, tmp_path):
    suite = write_suite(tmp_path, episodes=1)
    argv = ["suite", "run", str(suite), "--policy", str(policies["bundle"]),
            "--output", str(tmp_path / "out")]
    assert run_cli(argv) == 0


def test_baseline_regression_exits_one(policies, tmp_path):
    suite = write_suite(tmp_path, episodes=6)
    out = tmp_path / "out"
    argv = ["suite", "run", str(suite), "--policy", str(policies["bundle"]), "--output", str(out)]
    assert run_cli(argv) == 0
    # A baseline that succeeded on all six seeds: six lost pairs give p = 2 / 64.
    report = json.loads((out / "report.json").read_text())
    for row in report["rows"]:
        row["success"] = True
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(report))

    status = run_cli(argv[:-1] + [str(tmp_path / "again"), "--baseline", str(baseline)])
    assert status == 1
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    comparison = again["scenarios"][0]["baseline"]
    assert comparison["lost"] == 6
    assert comparison["p_value"] == pytest.approx(0.03125)
    assert comparison["regression"] is True
    junit = (tmp_path / "again" / "junit.xml").read_text()
    assert "regression against the baseline: 6 seeds lost" in junit


def test_wrong_robot_rejected_before_rollout(policies, tmp_path):
    damaged = tmp_path / "checkpoint"
    shutil.copytree(policies["checkpoint"], damaged)
    config = json.loads((damaged / "config.json").read_text())
    config["spec"]["robot"]["name"] = "panda"
    config["spec"]["robot"]["joint_names"] = [f"panda_joint{k}" for k in range(1, 7)]
    (damaged / "config.json").write_text(json.dumps(config))
    suite = write_suite(tmp_path)
    argv = ["suite", "run", str(suite), "--policy", str(damaged), "--output", str(tmp_path / "out")]

    from robota.suite_run import SuiteRunConfig, run_suite

    with pytest.raises(RobotaError, match="policy does not fit task 'pick-place'.*'panda'"):
        run_suite(SuiteRunConfig(suite=suite, policy=damaged))
    assert run_cli(argv) == 2
    assert not (tmp_path / "out").exists()


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def open_in_chromium(page: Path, screenshot: Path) -> str:
    """Load `page` in headless Chromium, save a screenshot and return its log on stderr."""
    browser = find_chromium()
    with tempfile.TemporaryDirectory() as profile:
        completed = subprocess.run(
            [
                browser, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                "--enable-logging=stderr", "--v=0", "--window-size=1200,1600",
                f"--screenshot={screenshot}", page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stderr


@pytest.mark.skipif(
    find_chromium() is None,
    reason="headless Chromium not installed; on Debian run `apt-get install chromium`",
)
@pytest.mark.multiprocess
def test_report_renders_in_chromium(compared, tmp_path):
    # The detector must see a console error on a page that logs one, or its silence means nothing.
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>console.error('planted-error')</script></body></html>")
    assert "planted-error" in open_in_chromium(broken, tmp_path / "broken.png")

    screenshot = tmp_path / "report.png"
    log = open_in_chromium(compared["out"] / "report.html", screenshot)
    console_lines = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert console_lines == []
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 10_000


def test_pytest_plugin_makes_items(policies, tmp_path):
    suite = write_suite(tmp_path, episodes=1, thresholds="min_success_rate = 0.5")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    # Without autoloading, `-p` loads the plugin once, whether or not its entry point is installed.
    environment = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    completed = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-p", "robota.pytest_plugin", "-q", "-rf",
            "--robota-suite", str(suite), "--robota-policy", str(policies["bundle"]),
            "-p", "no:cacheprovider",
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 1, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "4 failed" in completed.stdout
    assert "below min_success_rate 0.5" in completed.stdout
    assert "pick-place/ur5e/wide/latency" in completed.stdout



WORKER_FAILURE_SCRIPT = """
import sys
from robota.errors import RobotaError
from robota.suite_run import SuiteRunConfig, run_suite

if __name__ == "__main__":
    try:
        run_suite(SuiteRunConfig(suite=sys.argv[1], policy=sys.argv[2], workers=2))
    except RobotaError as error:
        print(f"error: {error}")
        sys.exit(2)
"""


@pytest.mark.multiprocess
def test_tampered_bundle_fails_in_workers(policies, tmp_path):
    # The bundle's hash check fails inside the workers. The run must stop with the error
    # instead of replacing failed workers forever, so it runs in a process with a timeout.
    damaged = tmp_path / "bundle"
    shutil.copytree(policies["bundle"], damaged)
    model = damaged / "policy.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    suite = write_suite(tmp_path, episodes=1)
    script = tmp_path / "run.py"
    script.write_text(WORKER_FAILURE_SCRIPT)
    completed = subprocess.run(
        [sys.executable, str(script), str(suite), str(damaged)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "policy.onnx" in completed.stdout
