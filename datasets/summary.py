"""Summaries and content fingerprints of dataset folders, for `robota dataset info`."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from robota.datasets.layout import write_json_atomic
from robota.datasets.reader import open_dataset

logger = logging.getLogger(__name__)

# The files whose content defines a dataset; anything else in the folder (a README, a hidden
# editor file) leaves the fingerprint unchanged.
_CONTENT_PATTERNS = (
    "meta/*.json",
    "meta/*.jsonl",
    "meta/tasks.parquet",
    "meta/episodes/*/*.parquet",
    "data/*/*.parquet",
    "videos/*/*/*.mp4",
)
# Records of computed fingerprints under a cache folder, one JSON file per dataset path.
FINGERPRINT_RECORDS = "fingerprints"
_READ_BLOCK_BYTES = 1 << 20


def summarise(root: str | Path) -> dict[str, Any]:
    """Describe a dataset folder: counts, rate, robot, tasks, features, duration and size.

    Returns:
        A dict with `path`, `codebase_version`, `robot`, `episodes`, `frames`, `fps`,
        `duration_s`, `tasks`, `features` ({key: {"dtype", "shape"}}, images as
        (height, width, channels)), `size_bytes` and `has_robota_spec`.
    """
    reader = open_dataset(root)
    features = {}
    for key, feature in reader.features.items():
        shape = reader.image_shape(key) if key in reader.image_keys else tuple(feature["shape"])
        features[key] = {"dtype": feature["dtype"], "shape": tuple(int(s) for s in shape)}
    size_bytes = sum(p.stat().st_size for p in reader.root.rglob("*") if p.is_file())
    return {
        "path": str(reader.root),
        "codebase_version": reader.info["codebase_version"],
        "robot": reader.info.get("robot_type"),
        "episodes": reader.num_episodes,
        "frames": reader.num_frames,
        "fps": reader.fps,
        "duration_s": reader.num_frames / reader.fps,
        "tasks": list(reader.tasks),
        "features": features,
        "size_bytes": size_bytes,
        "has_robota_spec": reader.spec is not None,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Render a `summarise` result as plain text lines for the terminal."""
    lines = [
        f"dataset   {summary['path']} (LeRobot {summary['codebase_version']})",
        f"robot     {summary['robot']}",
        f"episodes  {summary['episodes']}",
        f"frames    {summary['frames']} at {summary['fps']} Hz ({summary['duration_s']:.1f} s)",
        f"size      {_format_bytes(summary['size_bytes'])}",
        f"tasks     {len(summary['tasks'])}",
    ]
    lines += [f"  - {task}" for task in summary["tasks"]]
    lines.append("features")
    width = max(len(key) for key in summary["features"])
    for key, feature in summary["features"].items():
        shape = "x".join(str(s) for s in feature["shape"])
        lines.append(f"  {key:<{width}}  {feature['dtype']:<8} {shape}")
    if not summary["has_robota_spec"]:
        lines.append("note      no robota spec in info.json; units and frames are unknown")
    return "\n".join(lines)


def _format_bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size} B"
        size /= 1024
    return f"{size:.1f} GiB"


def _content_files(root: Path) -> list[Path]:
    return sorted({p for pattern in _CONTENT_PATTERNS for p in root.glob(pattern) if p.is_file()})


def fingerprint(root: str | Path) -> str:
    """Compute the sha256 of a dataset's content, equal for every copy of the folder.

    The hash covers each metadata, task, episode, data and video file: its path relative to
    `root`, then its bytes, in sorted path order. File times and other files do not count.
    v2.1 datasets' JSON Lines metadata counts too.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for path in _content_files(root):
        relative = path.relative_to(root).as_posix().encode()
        digest.update(len(relative).to_bytes(8, "little") + relative)
        digest.update(path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as handle:
            while block := handle.read(_READ_BLOCK_BYTES):
                digest.update(block)
    return digest.hexdigest()


def cached_fingerprint(root: str | Path, cache_dir: str | Path) -> str:
    """Return `fingerprint(root)`, reusing the value recorded under `cache_dir` when still valid.

    The record is valid while every content file has the same path, size, modification time,
    change time and inode as when the fingerprint was computed. The change time (ctime) is set
    by the kernel on every write, rename or chmod and cannot be set back by a program, so a
    changed file is never matched. Copying the folder computes the fingerprint again, and gives
    the same value. A record that cannot be written is skipped with a debug log.

    Args:
        root: Dataset folder.
        cache_dir: Folder for the records, outside the dataset (which may be read-only).
    """
    root = Path(root).resolve()
    signature = []
    for path in _content_files(root):
        status = path.stat()
        signature.append([
            path.relative_to(root).as_posix(), status.st_size, status.st_mtime_ns,
            status.st_ctime_ns, status.st_ino,
        ])
    name = hashlib.sha256(str(root).encode()).hexdigest()[:32]
    record_path = Path(cache_dir) / FINGERPRINT_RECORDS / f"{name}.json"
    try:
        record = json.loads(record_path.read_text())
        if record["root"] == str(root) and record["signature"] == signature:
            return record["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no usable record: compute the fingerprint

    value = fingerprint(root)
    try:
        write_json_atomic(record_path, {"root": str(root), "signature": signature, "fingerprint": value})
    except OSError as error:
        logger.debug("cannot record the fingerprint of %s in %s: %s", root, record_path, error)
    return value
