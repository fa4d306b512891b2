"""robota-edge drives the twin's rosbridge endpoint: the whole robot-side path on 127.0.0.1.

`robota sim serve` runs the pick-place twin in real time in a subprocess, and `robota-edge run`
connects to it through roslibpy, resets the episode, runs a bundle for a few control ticks and
publishes commands. A second client checks that the arm moved.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robota.cli import main as robota_main
from robota.edge.cli import main as edge_main
from robota.edge.ros import RESET_SERVICE, STATUS_SERVICE, RosBridgeIO

pytestmark = [pytest.mark.slow, pytest.mark.ros]

SERVER_DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("edge-sil")
    commands = [
        ["record", "--episodes", "1", "--image-size", "32", "--output", str(root / "dataset")],
        ["train", "--dataset", str(root / "dataset"), "--output", str(root / "checkpoint"),
         "--steps", "5", "--batch-size", "4"],
        ["export", str(root / "checkpoint"), "--output", str(root / "bundle")],
    ]
    for command in commands:
        assert robota_main(command) == 0, command
    return root / "bundle"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("sil-server") / "server.log"
    command = [
        sys.executable, "-m", "robota.sim_cli", "sim", "serve", "--port", "0",
        "--mode", "realtime", "--image-size", "32",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_DEADLINE_S
        port = None
        while port is None and time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            found = re.search(r"on ws://127\.0\.0\.1:(\d+)", log_path.read_text())
            port = int(found.group(1)) if found else None
            time.sleep(0.1)
        assert port is not None, f"server not ready within {SERVER_DEADLINE_S} s"
        yield f"ws://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _joint_positions(url: str, spec) -> np.ndarray:
    bridge = RosBridgeIO(url, spec)
    bridge.connect()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            observation = bridge.read_frame().observation
            if observation is not None:
                return np.asarray(observation["observation.state"][:6])
            time.sleep(0.05)
        raise AssertionError("no joint states within 10 s")
    finally:
        bridge.close()


def test_edge_run_drives_served_twin(bundle, server_url, capsys):
    from robota.edge.bundle import load_bundle

    spec = load_bundle(bundle).spec
    bridge = RosBridgeIO(server_url, spec)
    bridge.connect()
    try:
        bridge.call_trigger(RESET_SERVICE, args={"seed": 7})
    finally:
        bridge.close()
    before = _joint_positions(server_url, spec)

    argv = ["run", "--bundle", str(bundle), "--ros", server_url, "--max-steps", "20"]
    status = edge_main([*argv, "--allow-unsigned"])
    out = capsys.readouterr().out
    after = _joint_positions(server_url, spec)

    assert status == 0
    assert int(re.search(r"(\d+) sent", out).group(1)) >= 10
    assert "0 dropped" in out
    assert np.abs(after - before).max() > 1e-3


def test_served_twin_status_after_run(bundle, server_url):
    from robota.edge.bundle import load_bundle

    bridge = RosBridgeIO(server_url, load_bundle(bundle).spec)
    bridge.connect()
    try:
        values = bridge.call_service(STATUS_SERVICE)
    finally:
        bridge.close()
    assert values["mode"] == "realtime"
    assert values["steps"] > 0
