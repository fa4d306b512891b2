"""`robota demo` at toy size: every phase runs and the printed table has every row."""

from __future__ import annotations

import json

import pytest

from robota.demo import DemoConfig, format_summary, run_demo

pytestmark = pytest.mark.slow


def test_demo_runs_every_phase(tmp_path):
    config = DemoConfig(
        workdir=tmp_path,
        demonstrations=2,
        eval_episodes=2,
        train_steps=5,
        batch_size=4,
        image_size=32,
        latency_samples=5,
        eval_workers=2,
    )
    summary = run_demo(config)

    assert set(summary["phase_s"]) == {
        "record",
        "train",
        "export",
        "eval checkpoint",
        "eval bundle",
        "latency",
    }
    assert summary["expert"]["episodes"] >= 2
    assert summary["checkpoint"]["episodes"] == 2
    assert summary["bundle"]["episodes"] == 2
    assert summary["export"]["parity_max_abs_error"] <= 1e-4
    assert summary["latency"]["onnxruntime"]["p50_ms"] > 0
    on_disk = json.loads((tmp_path.glob("demo-*/summary.json").__next__()).read_text())
    assert on_disk["bundle"] == summary["bundle"]

    rows = dict(format_summary(summary))
    assert "policy success, bundle (ONNX Runtime)" in rows
    assert rows["policy success, checkpoint (torch)"].endswith("]")


@pytest.mark.multiprocess
def test_demo_trains_across_sites(tmp_path):
    pytest.importorskip("flwr")
    config = DemoConfig(
        workdir=tmp_path,
        demonstrations=2,
        eval_episodes=1,
        train_steps=2,
        batch_size=4,
        image_size=32,
        latency_samples=5,
        eval_workers=1,
        sites=2,
        federated_rounds=1,
    )
    summary = run_demo(config)

    run_dir = next(tmp_path.glob("demo-*"))
    assert (run_dir / "dataset-site0" / "meta" / "info.json").is_file()
    assert (run_dir / "dataset-site1" / "meta" / "info.json").is_file()
    assert (run_dir / "federated" / "global" / "model.safetensors").is_file()
    assert summary["bundle"]["episodes"] == 1
    assert summary["export"]["parity_max_abs_error"] <= 1e-4
