"""Samples per second of ChunkDataset's frame cache against decoding video for each sample.

Both sides read the same dataset and the same random frame indices on one torch thread:

- cache: `ChunkDataset[i]`, which reads the decoded frames memory-mapped from the cache;
- decoding: what a loader without a cache does per sample, `DatasetReader.decode_images` for
  each camera at the sample's frame (a seek to the keyframe before it, then decoding forward)
  plus the sample's numeric columns and action chunk.

LeRobot's own loader is measured too when `lerobot` is importable; otherwise the script prints why not.

Usage:
    python benchmarks/dataset_loader.py                        # the SO-101 dataset in ROBOTA_TEST_DATA
    python benchmarks/dataset_loader.py --dataset DIR
    python benchmarks/dataset_loader.py --record-episodes 3    # record a twin dataset first
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from robota.datasets import open_dataset
from robota.datasets.torch_loader import ChunkDataset

REPO_ROOT = Path(__file__).resolve().parent.parent
SO101 = "lerobot_v3_so101_sim"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, help="dataset folder (default: the SO-101 test data)")
    parser.add_argument("--record-episodes", type=int, help="record this many twin episodes and use them")
    parser.add_argument("--image-size", type=int, default=96, help="camera size of a recorded dataset")
    parser.add_argument("--cache-samples", type=int, default=2000, help="samples read from the cache")
    parser.add_argument("--decode-samples", type=int, default=100, help="samples decoded one by one")
    parser.add_argument("--chunk-size", type=int, default=50, help="actions per sample")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random frame indices")
    return parser.parse_args()


def resolve_dataset(args: argparse.Namespace, workdir: Path) -> Path:
    if args.record_episodes:
        from robota.record import RecordConfig, record

        output = workdir / "twin"
        record(RecordConfig(output=output, episodes=args.record_episodes, image_size=args.image_size))
        return output
    if args.dataset is not None:
        return args.dataset
    shared = Path(os.environ.get("ROBOTA_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
    return shared / SO101


def samples_per_s(read, indices: np.ndarray) -> float:
    start = time.perf_counter()
    for i in indices:
        read(int(i))
    return len(indices) / (time.perf_counter() - start)


def decode_sample(reader, dataset: ChunkDataset, i: int) -> dict:
    """Build sample i without the cache: seek and decode each camera's frame from the video."""
    position = int(np.searchsorted(dataset._ends, i, side="right"))
    episode = dataset.episodes[position]
    frame = i - int(dataset._starts[position])
    rows = reader.episode_rows(episode)
    sample = {key: reader.decode_images(episode, key, [frame], rows=rows)[0] for key in reader.image_keys}
    end = int(dataset._ends[position])
    steps = np.minimum(np.arange(i, i + dataset.chunk_size), end - 1)
    sample["action"] = dataset._columns["action"][steps]
    for key in reader.vector_keys:
        sample[key] = dataset._columns[key][i]
    return sample


def lerobot_samples_per_s(root: Path, indices: np.ndarray) -> str:
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except ImportError as error:
        return f"not available ({error})"
    dataset = LeRobotDataset(repo_id="local/benchmark", root=root)
    return f"{samples_per_s(dataset.__getitem__, indices):,.0f} samples/s"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as workdir:
        root = resolve_dataset(args, Path(workdir))
        reader = open_dataset(root)
        cache_dir = Path(workdir) / "cache"

        start = time.perf_counter()
        dataset = ChunkDataset(reader, args.chunk_size, cache_dir=cache_dir)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        dataset = ChunkDataset(reader, args.chunk_size, cache_dir=cache_dir)
        warm_s = time.perf_counter() - start

        rng = np.random.default_rng(args.seed)
        cached = samples_per_s(dataset.__getitem__, rng.integers(0, len(dataset), args.cache_samples))
        decoding = samples_per_s(
            lambda i: decode_sample(reader, dataset, i), rng.integers(0, len(dataset), args.decode_samples)
        )
        lerobot = lerobot_samples_per_s(root, rng.integers(0, len(dataset), args.decode_samples))

    cameras = ", ".join(f"{k} {'x'.join(map(str, reader.image_shape(k)))}" for k in reader.image_keys)
    print(f"dataset      {root}: {reader.num_episodes} episodes, {len(dataset)} frames, {cameras}")
    print(f"construct    {cold_s:.2f} s building the cache, {warm_s:.3f} s with the cache built")
    print(f"cache        {cached:,.0f} samples/s")
    print(f"decoding     {decoding:,.0f} samples/s")
    print(f"ratio        {cached / decoding:,.1f}x")
    print(f"lerobot      {lerobot}")


if __name__ == "__main__":
    main()
