"""Atomic writes: a file or folder appears whole or not at all, and a failed write keeps the old one."""
from __future__ import annotations

import os
import stat

import pytest

from agent import atomic
from agent.atomic import staging_folder, write_atomically, write_bytes_atomically, write_text_atomically


class Boom(Exception):
    pass


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_the_file_appears_whole_with_its_suffix_seen_by_the_writer(tmp_path):
    path = tmp_path / "new" / "deeper" / "data.safetensors"
    seen = []

    def write(tmp):
        seen.append(tmp)
        assert tmp.parent == path.parent and tmp.name.startswith(".") and tmp.suffix == ".safetensors"
        assert not path.exists()  # nothing at the target while it is being written
        tmp.write_bytes(b"x" * 1000)

    assert write_atomically(path, write) == path
    assert path.read_bytes() == b"x" * 1000 and not seen[0].exists()
    assert _names(path.parent) == ["data.safetensors"]


def test_a_failing_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "index.json"
    write_text_atomically(path, "old")

    def write(tmp, error=Boom):
        tmp.write_text("half")
        raise error()

    with pytest.raises(Boom):
        write_atomically(path, write)
    assert path.read_text() == "old" and _names(tmp_path) == ["index.json"]
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C mid-write cleans up too
        write_atomically(path, lambda tmp: write(tmp, KeyboardInterrupt))
    assert path.read_text() == "old" and _names(tmp_path) == ["index.json"]


def test_mode_is_applied_and_the_default_stays_private(tmp_path):
    shared = write_bytes_atomically(tmp_path / "a.bin", b"1")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o600  # mkstemp's default
    public = write_atomically(tmp_path / "b.pt", lambda tmp: tmp.write_bytes(b"2"), mode=0o644)
    assert stat.S_IMODE(public.stat().st_mode) == 0o644 and public.read_bytes() == b"2"


def test_text_and_bytes_replace_what_was_there(tmp_path):
    path = tmp_path / "card.png"
    write_bytes_atomically(path, b"one")
    write_bytes_atomically(path, b"two")
    assert path.read_bytes() == b"two"
    write_text_atomically(tmp_path / "t.yaml", "é\n")
    assert (tmp_path / "t.yaml").read_bytes() == "é\n".encode("utf-8")


def _folder(path, text):
    path.mkdir(parents=True)
    (path / "file.txt").write_text(text)


def test_staging_folder_creates_then_replaces_a_folder(tmp_path):
    target = tmp_path / "models" / "step-1"
    with staging_folder(target) as staging:
        assert staging.parent == target.parent and staging.name.startswith(".staging-")
        (staging / "file.txt").write_text("first")
    assert (target / "file.txt").read_text() == "first"
    with staging_folder(target) as staging:
        (staging / "other.txt").write_text("second")
    assert _names(target) == ["other.txt"] and _names(target.parent) == ["step-1"]


def test_a_failing_build_removes_the_staging_folder_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "persona"
    _folder(target, "old")
    with pytest.raises(Boom):
        with staging_folder(target) as staging:
            (staging / "file.txt").write_text("new")
            raise Boom()
    assert (target / "file.txt").read_text() == "old" and _names(tmp_path) == ["persona"]


def test_a_failing_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "persona"
    _folder(target, "old")
    real_rename = os.rename

    def rename(src, dst):
        if str(src).startswith(str(tmp_path / ".staging-")):  # staging -> target: the disk "fails"
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OSError, match="No space"):
        with staging_folder(target) as staging:
            (staging / "file.txt").write_text("new")
    assert (target / "file.txt").read_text() == "old"
    assert _names(tmp_path) == ["persona"]  # no .staging- or .replaced- folder left behind
