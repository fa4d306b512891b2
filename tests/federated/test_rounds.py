"""The coordinator's rounds with every site in this process: checkpoints, NaN sites, quorum."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from robota.federated import FederationError
from robota.federated_rounds import run_federation, wait_for_sites
from robota.policies import load_checkpoint

from federated_helpers import LocalSite, LocalTransport, tiny_config, write_site_dataset


@pytest.fixture(scope="module")
def site_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    return [write_site_dataset(root / f"site-{index}", seed=index) for index in range(2)]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.setenv("ROBOTA_CACHE_DIR", str(tmp_path / "cache"))


def _weights_finite(checkpoint) -> bool:
    policy = load_checkpoint(checkpoint)
    return all(torch.isfinite(p).all() for p in policy.parameters())


@pytest.mark.parametrize("strategy, compression", [("fedavg", "none"), ("fedprox", "fp16"), ("diloco", "int8")])
def test_rounds_write_loadable_checkpoint(tmp_path, site_data, strategy, compression):
    momentum = 0.5 if strategy == "diloco" else 0.0
    config = tiny_config(tmp_path / "run", strategy=strategy, compression=compression, outer_momentum=momentum)
    transport = LocalTransport({11: LocalSite(site_data[0]), 22: LocalSite(site_data[1])})

    checkpoint = run_federation(transport, config)

    policy = load_checkpoint(checkpoint)
    assert policy.name == "act"
    rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[-1]["accepted_from"] == [11, 22]
    assert rounds[-1]["bytes_per_site"]["11"] > 0
    saved = json.loads((checkpoint / "config.json").read_text())
    assert saved["federation"]["config"]["strategy"] == strategy


def test_rounds_change_global_weights(tmp_path, site_data):
    transport = LocalTransport({1: LocalSite(site_data[0]), 2: LocalSite(site_data[1])})
    first = load_checkpoint(run_federation(transport, tiny_config(tmp_path / "a", rounds=1)))
    second = load_checkpoint(run_federation(transport, tiny_config(tmp_path / "b", rounds=2)))
    changed = any(not torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters(), strict=True))
    assert changed


def test_plain_fedavg_turns_nan_with_nan_site(tmp_path, site_data):
    config = tiny_config(tmp_path / "run", rounds=1, reject_nonfinite=False)
    transport = LocalTransport({1: LocalSite(site_data[0]), 2: LocalSite(site_data[1], fault="nan")})
    assert not _weights_finite(run_federation(transport, config))


def test_robust_strategy_rejects_nan_site(tmp_path, site_data, caplog):
    config = tiny_config(tmp_path / "run", rounds=1, quorum=1)
    transport = LocalTransport({1: LocalSite(site_data[0]), 2: LocalSite(site_data[1], fault="nan")})
    with caplog.at_level(logging.WARNING):
        checkpoint = run_federation(transport, config)
    assert _weights_finite(checkpoint)
    assert "rejected the update of node 2: it contains NaN or Inf" in caplog.text
    assert json.loads((tmp_path / "run" / "rounds.json").read_text())[0]["accepted_from"] == [1]


def test_nan_site_below_quorum_fails(tmp_path, site_data):
    config = tiny_config(tmp_path / "run", rounds=1)  # quorum defaults to min_sites = 2
    transport = LocalTransport({1: LocalSite(site_data[0]), 2: LocalSite(site_data[1], fault="nan")})
    with pytest.raises(FederationError, match="1 accepted update.* below the quorum of 2"):
        run_federation(transport, config)


def test_silent_site_dropped_with_quorum(tmp_path, site_data, caplog):
    config = tiny_config(tmp_path / "run", rounds=3, quorum=1)
    transport = LocalTransport({1: LocalSite(site_data[0]), 2: LocalSite(site_data[1], silent_from_round=2)})
    with caplog.at_level(logging.WARNING):
        run_federation(transport, config)
    rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
    assert [r["accepted_from"] for r in rounds] == [[1, 2], [1], [1]]
    assert "node 2 sent no valid reply" in caplog.text


def test_silent_site_below_quorum_fails(tmp_path, site_data):
    config = tiny_config(tmp_path / "run", rounds=2)
    transport = LocalTransport({1: LocalSite(site_data[0]), 2: LocalSite(site_data[1], silent_from_round=2)})
    with pytest.raises(FederationError, match="round 2: 1 accepted"):
        run_federation(transport, config)


def test_wait_for_sites_times_out(site_data):
    transport = LocalTransport({1: LocalSite(site_data[0])})
    with pytest.raises(FederationError, match="1 site\\(s\\) connected within 1 s, but --min-sites is 2"):
        wait_for_sites(transport, min_sites=2, timeout_s=1)


def test_sites_with_different_specs_fail(tmp_path, site_data):
    smaller_images = write_site_dataset(tmp_path / "8px", seed=5, episodes=1, image_size=8)
    transport = LocalTransport({1: LocalSite(site_data[0]), 2: LocalSite(smaller_images)})
    with pytest.raises(FederationError, match="2 different feature specs"):
        run_federation(transport, tiny_config(tmp_path / "run", rounds=1))


def test_global_checkpoint_exports_and_evaluates(tmp_path, site_data):
    from robota.evaluate import load_rollout_policy
    from robota.export import export_bundle, read_dataset_fingerprint

    transport = LocalTransport({1: LocalSite(site_data[0]), 2: LocalSite(site_data[1])})
    checkpoint = run_federation(transport, tiny_config(tmp_path / "run", rounds=1))

    assert read_dataset_fingerprint(checkpoint) is not None
    result = export_bundle(checkpoint, tmp_path / "bundle")
    assert (result.bundle / "policy.onnx").is_file()
    assert load_rollout_policy(checkpoint).spec == load_checkpoint(checkpoint).spec
