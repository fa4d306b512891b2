"""`robota keys new`, parsed by argparse and run as the robota CLI runs commands."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from robota import console  # noqa: E402
from robota.edge.signing import load_private_key, load_public_key, key_id  # noqa: E402
from robota.keys_cli import register  # noqa: E402


def robota_keys(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="robota")
    register(parser.add_subparsers(dest="command", required=True))
    return console.run_command(parser.parse_args(["keys", *argv]))


def test_keys_new_writes_pair(tmp_path: Path, capsys) -> None:
    private, public = tmp_path / "release.pem", tmp_path / "release.pub"

    status = robota_keys("new", "--private-key", str(private), "--public-key", str(public))

    out = capsys.readouterr().out
    assert status == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    public_id = key_id(load_public_key(public))
    assert key_id(load_private_key(private).public_key()) == public_id
    assert f"key id {public_id}" in out


def test_keys_new_keeps_existing_files(tmp_path: Path, capsys) -> None:
    private, public = tmp_path / "release.pem", tmp_path / "release.pub"
    public.write_text("keep me")

    status = robota_keys("new", "--private-key", str(private), "--public-key", str(public))

    assert status == 2
    assert f"{public}: already exists" in capsys.readouterr().err
    assert public.read_text() == "keep me"
    assert not private.exists()


def test_keys_new_rejects_same_path(tmp_path: Path, capsys) -> None:
    key = tmp_path / "key.pem"

    status = robota_keys("new", "--private-key", str(key), "--public-key", str(key))

    assert status == 2
    assert "both the private and the public key file" in capsys.readouterr().err
    assert not key.exists()


def test_keys_new_missing_folder(tmp_path: Path, capsys) -> None:
    private, public = tmp_path / "release.pem", tmp_path / "missing" / "release.pub"

    status = robota_keys("new", "--private-key", str(private), "--public-key", str(public))

    assert status == 2
    assert f"{public.parent}: folder not found" in capsys.readouterr().err
    assert not private.exists()


def test_keys_new_requires_both_paths(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        robota_keys("new", "--private-key", str(tmp_path / "release.pem"))
    assert exit_info.value.code == 2
