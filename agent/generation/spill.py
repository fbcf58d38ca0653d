"""Where idle sequences' KV states go instead of being dropped: RAM up to a budget, then files on disk.

A state on disk is one file per saved session under the personae cache (`kv/`): a header naming the model
it came from (path, size, mtime, llama-cpp-python version) and the token ids it holds, then llama.cpp's own
serialisation, checked by SHA-256. A file of another model, a truncated or corrupt file, or one whose ids do
not match what is asked for is never restored: the sequence recomputes. Thread-safe.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..atomic import write_bytes_atomically

MAGIC = b"PERSONAE-KV1\n"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spilled:
    """A sequence's state out of the KV cache: `data` in RAM, or the file at `path` (data None)."""
    ids: tuple[int, ...]  # the token ids (and negative soft-prompt slots) the state holds, in order
    data: Optional[bytes] = None
    path: Optional[Path] = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else 0


def model_fingerprint(path: Path, version: str) -> str:
    """Which model file a state belongs to: its path, size and mtime, and the llama.cpp binding's version."""
    info = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{info.st_size}|{info.st_mtime_ns}|{version}".encode()).hexdigest()[:32]


class SpillStore:
    """RAM spills (bounded by `ram_bytes`, oldest written to disk when they have a key, else dropped) and the
    disk files of saved sessions (bounded by `disk_bytes`, oldest deleted)."""

    def __init__(self, folder: Optional[Path], fingerprint: str, *, ram_bytes: int, disk_bytes: int):
        self.folder = folder
        self.fingerprint = fingerprint
        self.ram_bytes, self.disk_bytes = ram_bytes, disk_bytes
        self._ram: OrderedDict[int, int] = OrderedDict()  # owner id -> bytes held in RAM, oldest first
        self._held = 0
        self._lock = threading.Lock()
        self.written = self.restored = self.rejected = 0  # counts, for benchmarks and /health

    # --- RAM ---------------------------------------------------------------------------------
    def hold(self, owner: int, ids, data: bytes) -> tuple[Spilled, list[int]]:
        """Accounts a new RAM spill of `owner` (an id); returns it and the owners whose RAM spills must leave
        RAM (oldest first) to keep the budget: the table writes those with a key to disk and drops the rest."""
        with self._lock:
            self._ram.pop(owner, None)
            self._ram[owner] = len(data)
            self._held = sum(self._ram.values())
            over, total = [], self._held
            for other, size in self._ram.items():  # oldest first; the new one too when it alone is over
                if total <= self.ram_bytes:
                    break
                over.append(other)
                total -= size
            return Spilled(tuple(ids), data=data), over

    def let_go(self, owner: int) -> None:
        """`owner`'s RAM spill is gone (restored, written to disk or dropped)."""
        with self._lock:
            if self._ram.pop(owner, None) is not None:
                self._held = sum(self._ram.values())

    @property
    def ram_held(self) -> int:
        return self._held

    # --- disk --------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.folder / (hashlib.sha256(f"{self.fingerprint}|{key}".encode()).hexdigest()[:40] + ".kv")

    def write(self, key: str, ids, data: bytes) -> Optional[Spilled]:
        """Writes a saved session's state to disk (atomically); None when there is no folder or it is too big."""
        if self.folder is None or len(data) > self.disk_bytes:
            return None
        header = json.dumps({"model": self.fingerprint, "key": key, "n_ids": len(ids),
                             "sha256": hashlib.sha256(data).hexdigest()}).encode()
        body = MAGIC + len(header).to_bytes(4, "little") + header + np.asarray(ids, dtype=np.int32).tobytes() + data
        path = self._path(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_bytes_atomically(path, body)
        except OSError as e:
            log.warning("could not save a session's KV state to %s (%s); it will be recomputed", path, e)
            return None
        with self._lock:
            self.written += 1
        self._trim_disk(keep=path)
        return Spilled(tuple(ids), path=path)

    def find(self, key: str) -> Optional[Spilled]:
        """The disk state saved under `key` for this model, its ids read from the header (the data is checked
        when it is read); None when there is none or the header is not ours."""
        if self.folder is None:
            return None
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                header, ids = _read_header(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            self._reject(path, e)
            return None
        if header.get("model") != self.fingerprint or header.get("key") != key:
            self._reject(path, ValueError("it was saved by another model file"))
            return None
        return Spilled(tuple(ids), path=path)

    def read(self, spilled: Spilled) -> Optional[bytes]:
        """The state bytes of a disk spill, checked against its header; None (the file removed) when the file
        is truncated, corrupt, of another model or holds other ids."""
        try:
            with open(spilled.path, "rb") as f:
                header, ids = _read_header(f)
                data = f.read()
            if header.get("model") != self.fingerprint:
                raise ValueError("it was saved by another model file")
            if tuple(ids) != spilled.ids:
                raise ValueError("its token ids changed since it was found")
            if hashlib.sha256(data).hexdigest() != header.get("sha256"):
                raise ValueError("its checksum does not match (truncated or corrupt)")
        except (OSError, ValueError) as e:
            self._reject(spilled.path, e)
            return None
        with self._lock:
            self.restored += 1
        return data

    def remove(self, spilled: Optional[Spilled]) -> None:
        if spilled is not None and spilled.path is not None:
            spilled.path.unlink(missing_ok=True)

    def _reject(self, path: Path, why: Exception) -> None:
        log.warning("the saved KV state %s is not usable (%s); the session recomputes its prompt", path, why)
        with self._lock:
            self.rejected += 1
        path.unlink(missing_ok=True)

    def _trim_disk(self, keep: Path) -> None:
        files = sorted(self.folder.glob("*.kv"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files:
            if total <= self.disk_bytes:
                break
            if path != keep:
                total -= path.stat().st_size
                path.unlink(missing_ok=True)


def _read_header(f) -> tuple[dict, list[int]]:
    if f.read(len(MAGIC)) != MAGIC:
        raise ValueError("not a personae KV state file")
    size = int.from_bytes(f.read(4), "little")
    if not 0 < size < 1 << 16:
        raise ValueError("damaged header")
    header = json.loads(f.read(size).decode("utf-8"))
    n = int(header.get("n_ids", -1))
    raw = f.read(4 * n) if n >= 0 else b""
    if n < 0 or len(raw) != 4 * n:
        raise ValueError("truncated token ids")
    return header, np.frombuffer(raw, dtype=np.int32).tolist()
