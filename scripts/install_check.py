"""Says whether everything scripts/install.sh installs is already in place for this checkout; exit 0 if so.

Reads package metadata and imports only llama_cpp (its compiled library), so a repeat `make test` or `make chat`
starts in about a second, where pip's own "Requirement already satisfied" takes minutes. Prints what is missing.

Usage: python3 scripts/install_check.py REQUIREMENT...  (the pins install.sh installs besides pyproject.toml's
dependencies and its dev extra, e.g. torch==2.9.1)
"""
from __future__ import annotations

import importlib.metadata as metadata
import json
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

CHECKOUT = Path(__file__).resolve().parents[1]

try:
    from packaging.requirements import Requirement
except ImportError:  # a fresh machine: pip carries its own copy
    try:
        from pip._vendor.packaging.requirements import Requirement
    except ImportError:
        print("[install] to do: everything (this Python has neither packaging nor pip yet)", file=sys.stderr)
        sys.exit(1)


def declared() -> list[str]:
    """pyproject.toml's dependencies and dev extra, as they are now in this checkout."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the installed copy's, which the editable check ties to this checkout
        return metadata.requires("personae") or []  # other extras than dev are skipped by their markers
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["dev"]]


def unmet(text: str) -> list[str]:
    """What keeps the requirement `text` (extras included) from being met; [] when it is."""
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": "dev"}):
        return []
    try:
        have = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return [f"{req.name} is not installed"]
    if req.specifier and not req.specifier.contains(have, prereleases=True):
        return [f"{req.name} {have} is installed, {req.specifier} is wanted"]
    missing = []
    for extra in req.extras:
        for sub in map(Requirement, metadata.requires(req.name) or []):
            if sub.marker is not None and sub.marker.evaluate({"extra": extra}) \
                    and not sub.marker.evaluate({"extra": ""}):
                sub.marker = None
                missing += unmet(str(sub))
    return missing


def editable_here() -> list[str]:
    """[] when personae is installed editable from this very checkout."""
    try:
        url = json.loads(metadata.distribution("personae").read_text("direct_url.json") or "{}")
    except metadata.PackageNotFoundError:
        return []  # said by unmet("personae")
    source = Path(unquote(urlparse(url["url"]).path)) if url.get("url") else None
    if source is not None and url.get("dir_info", {}).get("editable") and source.resolve() == CHECKOUT:
        return []
    return [f"personae is installed from {source or 'a package index'}, not editable from {CHECKOUT}"]


def main(pins: list[str]) -> int:
    missing = unmet("personae") + editable_here()
    for text in [*pins, *declared()]:
        missing += unmet(text)
    if not missing:
        try:
            import llama_cpp  # noqa: F401 - the compiled library loads
        except Exception as e:  # noqa: BLE001 - any failure means build it again
            missing.append(f"llama_cpp does not import ({type(e).__name__}: {e})")
    for line in missing[:5]:
        print(f"[install] to do: {line}", file=sys.stderr)
    if len(missing) > 5:
        print(f"[install] to do: {len(missing) - 5} more", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
