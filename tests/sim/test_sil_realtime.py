"""The SIL server in realtime mode: the twin steps itself, and a signal stops it cleanly."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("roslibpy")
from test_sil_server import BridgeClient, published, stamp_ns, start_server, stop_server  # noqa: E402
from websockets.sync.client import connect  # noqa: E402


@pytest.fixture(scope="module")
def realtime_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    log_path = tmp_path_factory.mktemp("sil-realtime") / "server.log"
    process, port = start_server(log_path, "--mode", "realtime", "--image-size", "32")
    yield process, port
    stop_server(process)


@pytest.fixture
def client(realtime_server: tuple) -> Iterator[BridgeClient]:
    _, port = realtime_server
    with connect(f"ws://127.0.0.1:{port}", open_timeout=5) as websocket:
        yield BridgeClient(websocket)


def test_twin_steps_by_itself(client: BridgeClient) -> None:
    client.subscribe("/joint_states")
    frames = client.receive_until(lambda f: f.get("topic") == "/joint_states")
    for _ in range(4):
        frames += client.receive_until(lambda f: f.get("topic") == "/joint_states")

    # Each message is one control period of simulated time after the one before.
    stamps = [stamp_ns(m) for m in published(frames, "/joint_states")]
    assert len(stamps) == 5
    assert np.diff(stamps).tolist() == [100_000_000] * 4


def test_command_moves_arm_without_step_calls(client: BridgeClient) -> None:
    client.subscribe("/joint_states")
    client.call("/robota/reset", {"seed": 4})
    state = client.receive_until(lambda f: f.get("topic") == "/joint_states")[-1]["msg"]
    target = np.array(state["position"][:6]) + 0.25
    client.send(
        {"op": "publish", "topic": "/forward_position_controller/commands", "msg": {"data": target.tolist()}}
    )

    def reached(frame: dict) -> bool:
        if frame.get("topic") != "/joint_states":
            return False
        return float(np.abs(np.array(frame["msg"]["position"][:6]) - target).max()) < 0.01

    assert reached(client.receive_until(reached)[-1])


def test_step_service_declines_in_realtime(client: BridgeClient) -> None:
    response, _ = client.call("/robota/step")

    assert response["result"] is True
    assert response["values"]["success"] is False
    assert "--mode lockstep" in response["values"]["message"]
    assert response["values"]["mode"] == "realtime"


def test_sigterm_stops_server(tmp_path) -> None:
    process, _ = start_server(tmp_path / "server.log", "--mode", "realtime")

    assert stop_server(process) == 0
    assert "SIL server stopped" in (tmp_path / "server.log").read_text()


def test_port_in_use_fails_with_status_2() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        command = [sys.executable, "-m", "robota.sim_cli", "sim", "serve", "--port", str(port)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
