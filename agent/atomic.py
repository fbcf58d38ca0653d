"""Writes files and folders so a reader never sees half of one: each is built under a hidden name beside
its target and renamed into place; a failed write leaves no temp behind and the old file or folder as it was.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional


def write_atomically(path: str | Path, write: Callable[[Path], object], *, mode: Optional[int] = None) -> Path:
    """Calls `write(tmp)` on a fresh temp file beside `path`, then renames it to `path`; returns `path`.

    The temp file keeps `path`'s suffix (libraries such as safetensors look at it) and is created 0600 by
    mkstemp; `mode` (e.g. 0o644) is set on it before the rename. If anything raises, it is removed again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".writing-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """`text` as UTF-8 into `path`, atomically (see write_atomically)."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    """`data` into `path`, atomically (see write_atomically)."""
    return write_atomically(path, lambda tmp: tmp.write_bytes(data))


@contextmanager
def staging_folder(target: str | Path) -> Iterator[Path]:
    """Yields a fresh hidden folder beside `target` (`.staging-XXXX`) to build in; when the block ends
    normally it becomes `target`, replacing an existing one (which is kept if the swap fails).

    If the block or the swap raises, the staging folder is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        yield staging
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_into_place(staging: Path, target: Path) -> None:
    """Renames `staging` to `target`, moving an existing `target` aside first and back if the rename fails."""
    if not target.exists():
        os.rename(staging, target)
        return
    graveyard = Path(tempfile.mkdtemp(prefix=".replaced-", dir=target.parent))
    old = graveyard / target.name
    try:
        os.rename(target, old)
    except BaseException:
        graveyard.rmdir()
        raise
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)  # should this fail too, the old folder stays in the graveyard rather than lost
        graveyard.rmdir()
        raise
    shutil.rmtree(graveyard, ignore_errors=True)
