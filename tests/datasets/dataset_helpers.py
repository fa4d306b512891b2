"""Synthetic frames and recordings shared by the dataset tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robota.datasets import DatasetWriter
from robota.spec import Spec

FPS = 10
SO101 = "lerobot_v3_so101_sim"


def smooth_image(height: int, width: int, step: int) -> np.ndarray:
    """A smooth RGB gradient that moves with `step`; H.264 keeps it within a few levels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 128 + 40 * np.sin(2 * np.pi * (x / width + step / 40))
    green = 128 + 40 * np.cos(2 * np.pi * (y / height + step / 50))
    blue = np.full_like(x, 60 + 2 * (step % 50))
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def make_frame(spec: Spec, episode: int, step: int, task: str = "pick the part") -> dict:
    """One frame with deterministic values: vector element j is episode*1000 + step + j/10."""
    frame: dict = {}
    for key, feature in spec.features.items():
        if feature.is_image:
            frame[key] = smooth_image(feature.shape[0], feature.shape[1], step + 7 * episode)
        elif feature.dtype == "string":
            frame[key] = task
        else:
            base = episode * 1000 + step
            frame[key] = (base + np.arange(feature.shape[0]) / 10).astype(np.float32)
    return frame


def record(
    root: Path,
    spec: Spec,
    lengths: Sequence[int],
    tasks: Sequence[str] | None = None,
    **writer_options,
) -> Path:
    """Record one episode per length, with metadata {"seed": 100 + episode}."""
    with DatasetWriter(root, spec, robot_type="ur5e", **writer_options) as writer:
        for episode, length in enumerate(lengths):
            task = tasks[episode] if tasks else "pick the part"
            for step in range(length):
                writer.add_frame(make_frame(spec, episode, step, task))
            writer.save_episode({"seed": 100 + episode})
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Map every path under `root` to (size, mtime_ns), to show that a folder was not touched."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
    }


def set_read_only(root: Path, read_only: bool) -> None:
    """Make a folder tree read-only, or writable again. Root ignores these bits, hence `snapshot`."""
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555 if read_only else 0o755)
        else:
            path.chmod(0o444 if read_only else 0o644)


def write_v21(source: Path, target: Path, codec: str = "libx264") -> Path:
    """Write a LeRobot v2.1 copy of a v3.0 dataset: one parquet and one mp4 per episode.

    The frame rows are copied as they are. Each camera's frames are decoded and encoded again with
    `codec` into one file per episode whose timestamps start at 0, as LeRobot v2.1 writes them.
    """
    import json

    import pyarrow.parquet as pq

    from robota.datasets import open_dataset
    from robota.datasets.layout import column_to_numpy
    from robota.datasets.stats import to_json, vector_stats
    from robota.datasets.video import EpisodeVideoEncoder, default_video_options, video_info

    reader = open_dataset(source)
    episodes_stats = []
    for index in range(reader.num_episodes):
        rows = reader.episode_rows(index)
        path = target / f"data/chunk-000/episode_{index:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, path)
        stats = {}
        for name in rows.column_names:
            stats[name] = vector_stats(column_to_numpy(rows[name]))
        for key in reader.video_keys:
            frames = reader.decode_images(index, key)
            video = target / f"videos/chunk-000/{key}/episode_{index:06d}.mp4"
            video.parent.mkdir(parents=True, exist_ok=True)
            encoder = EpisodeVideoEncoder(video, reader.fps, codec, default_video_options(codec))
            for frame in frames:
                encoder.add(frame)
            encoder.close()
            scaled = frames.reshape(-1, 3).astype(np.float64) / 255.0
            stats[key] = {
                "min": scaled.min(axis=0).reshape(3, 1, 1), "max": scaled.max(axis=0).reshape(3, 1, 1),
                "mean": scaled.mean(axis=0).reshape(3, 1, 1), "std": scaled.std(axis=0).reshape(3, 1, 1),
                "count": np.array([len(frames)]),
            }
        for feature in stats.values():
            for quantile in ("q01", "q10", "q50", "q90", "q99"):
                feature.pop(quantile, None)
        episodes_stats.append({"episode_index": index, "stats": to_json(stats)})

    info = {k: v for k, v in reader.info.items() if k not in ("data_files_size_in_mb", "video_files_size_in_mb")}
    info.update({
        "codebase_version": "v2.1",
        "total_chunks": 1,
        "total_videos": reader.num_episodes * len(reader.video_keys),
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
    })
    info.pop("robota", None)
    for key in reader.video_keys:
        info["features"][key]["info"] = video_info(target / f"videos/chunk-000/{key}/episode_000000.mp4")
    meta = target / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "info.json").write_text(json.dumps(info, indent=4))
    (meta / "tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(reader.tasks))
    )
    (meta / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": i, "tasks": reader.episode_metadata(i)["tasks"], "length": n}) + "\n"
        for i, n in enumerate(reader.episode_lengths)
    ))
    (meta / "episodes_stats.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes_stats))
    return target
