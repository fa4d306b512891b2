"""The federated benchmark's non-IID split: each site gets the episodes of one part spawn band."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from robota.datasets import open_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_benchmark():
    path = REPO_ROOT / "benchmarks" / "federated_pick_place.py"
    spec = importlib.util.spec_from_file_location("federated_pick_place", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("part_y_m", "band"),
    [(-0.25, 0), (-0.19, 0), (-0.18, 1), (-0.15, 1), (-0.11, 2), (-0.05, 2), (-0.30, 0), (0.0, 2)],
)
def test_spawn_band_of_three(part_y_m, band):
    assert _load_benchmark().spawn_band(part_y_m, 3) == band


def test_split_puts_each_episode_in_its_band(tmp_path):
    benchmark = _load_benchmark()

    data = benchmark.record_site_split(tmp_path, sites=2, episodes_per_site=1, image_size=16)

    union = open_dataset(data["union_dir"])
    sites = [open_dataset(folder) for folder in data["site_dirs"]]
    assert union.num_episodes == 2
    assert [site.num_episodes for site in sites] == [1, 1]
    assert union.num_frames == sites[0].num_frames + sites[1].num_frames
    for index, site in enumerate(sites):
        metadata = site.episode_metadata(0)
        assert metadata["site"] == index
        assert benchmark.spawn_band(metadata["part_y_m"], 2) == index
