"""scripts/install_check.py, the check that lets a repeat `make test` or `make chat` skip the install: package
metadata against requirements, extras included, and an editable install of this very checkout.

Fake distributions (a dist-info folder put first on sys.path) stand in for installed packages.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("install_check", REPO / "scripts" / "install_check.py")
install_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install_check)


def fake_distribution(site: Path, name: str, version: str, requires=(), direct_url=None) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))


@pytest.fixture()
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_versions_and_extras_are_checked(site):
    fake_distribution(site, "lantern-kit", "1.4", ['tide-tables>=2; extra == "charts"', 'foghorn; extra == "sound"'])
    fake_distribution(site, "tide-tables", "1.0")
    assert install_check.unmet("lantern-kit>=1.2") == []
    assert install_check.unmet("lantern-kit==2.0") == ["lantern-kit 1.4 is installed, ==2.0 is wanted"]
    assert install_check.unmet("lantern-kit[charts]") == ["tide-tables 1.0 is installed, >=2 is wanted"]
    assert install_check.unmet("lantern-kit[sound]") == ["foghorn is not installed"]
    assert install_check.unmet("no-such-lantern") == ["no-such-lantern is not installed"]
    assert install_check.unmet('foghorn; extra == "audio"') == []  # another extra than dev: not installed by us


@pytest.mark.parametrize("direct_url, source", [
    ({"url": "file:///elsewhere/personae", "dir_info": {"editable": True}}, "/elsewhere/personae"),  # another clone
    ({"url": "file:///elsewhere/personae", "dir_info": {}}, "/elsewhere/personae"),  # copied, not editable
    (None, "a package index"),
])
def test_personae_must_be_installed_editable_from_this_checkout(site, direct_url, source):
    fake_distribution(site, "personae", "0.1.0", direct_url=direct_url)
    assert install_check.editable_here() == [f"personae is installed from {source}, not editable from {REPO}"]


def test_an_editable_install_of_this_checkout_passes(site):
    fake_distribution(site, "personae", "0.1.0", direct_url={"url": REPO.as_uri(), "dir_info": {"editable": True}})
    assert install_check.editable_here() == []


def test_the_requirements_are_pyprojects_as_they_are_now():
    declared = install_check.declared()
    assert "transformers>=5.0,<6" in declared and "pytest>=8" in declared  # a dependency and the dev extra
    assert not any("llama-cpp-python" in r for r in declared)  # the llamacpp extra: install.sh checks it itself
