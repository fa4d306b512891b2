"""A real SuperLink and SuperNodes on 127.0.0.1: a full run, a site killed mid-run, no sites."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the federated extra is not installed: pip install 'robota[federated]'")

from robota.federated import LOOPBACK, train_federated_local
from robota.federated_processes import FlowerProcesses, free_port
from robota.policies import load_checkpoint

from federated_helpers import tiny_config, write_site_dataset

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBOTA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _sites(tmp_path: Path, count: int) -> list[Path]:
    return [write_site_dataset(tmp_path / f"site-{index}", seed=index) for index in range(count)]


def _wait_for_rounds(path: Path, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and len(json.loads(path.read_text() or "[]")) >= count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{path} did not list {count} round(s) within {timeout_s} s")


def test_two_sites_three_rounds(tmp_path):
    config = tiny_config(
        tmp_path / "run", rounds=3, strategy="diloco", outer_lr=0.7, outer_momentum=0.9,
        compression="int8", wait_timeout_s=60, round_timeout_s=120,
    )

    checkpoint = train_federated_local(_sites(tmp_path, 2), config, workdir=tmp_path / "work", run_timeout_s=540)

    assert load_checkpoint(checkpoint).name == "act"
    rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(len(r["accepted_from"]) == 2 for r in rounds)
    assert all(size > 0 for r in rounds for size in r["bytes_per_site"].values())


def test_killed_site_run_finishes_with_quorum(tmp_path):
    config = tiny_config(tmp_path / "run", rounds=2, quorum=1, wait_timeout_s=60, round_timeout_s=60)
    sites = _sites(tmp_path, 2)
    errors: list[BaseException] = []

    with FlowerProcesses(tmp_path / "work") as processes:
        port = processes.start_superlink()
        processes.start_site("site-0", sites[0], f"{LOOPBACK}:{port}")
        doomed = processes.start_site("site-1", sites[1], f"{LOOPBACK}:{port}")

        def run() -> None:
            try:
                processes.run_app(config, timeout_s=480)
            except BaseException as error:  # Reported by the assertions below.
                errors.append(error)

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        _wait_for_rounds(tmp_path / "run" / "rounds.json", 1, timeout_s=300)
        os.kill(doomed.pid, signal.SIGKILL)
        runner.join(timeout=500)
        alive = runner.is_alive()

    assert not alive, "the run did not end after a site was killed"
    assert errors == []
    rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2]
    assert len(rounds[0]["accepted_from"]) == 2
    assert len(rounds[1]["accepted_from"]) == 1
    assert load_checkpoint(tmp_path / "run" / "global").name == "act"


def test_coordinator_without_sites_fails_clearly(tmp_path):
    command = [
        sys.executable, "-m", "robota.federate_cli", "federate", "coordinator",
        "--port", str(free_port()), "--min-sites", "1", "--wait-timeout-s", "2",
        "--output", str(tmp_path / "run"), "--workdir", str(tmp_path / "work"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 2
    assert "0 site(s) connected within 2 s, but --min-sites is 1" in output
    assert not (tmp_path / "run" / "global").exists()


def test_tls_auth_rejects_unregistered_site(tmp_path):
    from robota.federated_tls import make_local_credentials

    tls, keys = make_local_credentials(tmp_path / "keys", ["registered", "unregistered"])
    config = tiny_config(tmp_path / "run", rounds=1, min_sites=1, wait_timeout_s=60, round_timeout_s=120)
    sites = _sites(tmp_path, 2)

    with FlowerProcesses(tmp_path / "work", tls=tls, supernode_auth=True) as processes:
        port = processes.start_superlink()
        processes.register_site(keys["registered"].public_key)
        address = f"{LOOPBACK}:{port}"
        processes.start_site(
            "registered", sites[0], address, ca_cert=tls.ca_cert, private_key=keys["registered"].private_key
        )
        intruder = processes.start_site(
            "unregistered", sites[1], address, ca_cert=tls.ca_cert, private_key=keys["unregistered"].private_key
        )
        processes.run_app(config, timeout_s=300)
        intruder_code = intruder.wait(timeout=120)

    assert intruder_code != 0
    assert "Exit Code: 305" in (tmp_path / "work" / "unregistered.log").read_text()
    rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
    assert len(rounds[0]["accepted_from"]) == 1
    assert load_checkpoint(tmp_path / "run" / "global").name == "act"
