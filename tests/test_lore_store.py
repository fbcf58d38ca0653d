import json

import pytest

from agent.persona.lore_store import LoreLibrary
from agent.persona.lorebook import LoreError
from agent.persona.store import PersonaStore
from agent.config import CardLimits
from agent.paths import Home

WORLD = {"entries": {"0": {"uid": 0, "key": ["kraken"], "content": "The kraken sleeps.", "order": 100, "position": 0}}}


def _lib(tmp_path):
    path = tmp_path / "world.json"
    path.write_text(json.dumps(WORLD))
    return LoreLibrary(tmp_path / "lore"), path


def test_import_stores_a_v3_copy_and_refuses_to_overwrite(tmp_path):
    lib, path = _lib(tmp_path)
    slug, book = lib.import_file(path, name="Sea Lore")
    assert slug == "sea-lore" and book.name == "Sea Lore" and len(book.entries) == 1
    stored = json.loads((tmp_path / "lore" / "sea-lore.json").read_text())
    assert stored["spec"] == "lorebook_v3"
    assert lib.get("Sea Lore").entries == book.entries  # round trip through the stored copy
    with pytest.raises(LoreError, match="already exists"):
        lib.import_file(path, name="Sea Lore")
    lib.import_file(path, name="Sea Lore", replace=True)
    assert lib.names() == ["sea-lore"]


def test_a_bad_file_leaves_the_library_as_it_was(tmp_path):
    lib, _ = _lib(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"entries": [{"keys": 5, "content": "x"}]}')
    with pytest.raises(LoreError, match="bad.json"):
        lib.import_file(bad)
    assert lib.names() == []


def test_attachments_books_for_and_remove(tmp_path):
    lib, path = _lib(tmp_path)
    lib.import_file(path, name="sea")
    store = PersonaStore(Home(data=tmp_path / "home", cache=tmp_path / "cache"), CardLimits())
    mara = store.get("mara")
    before = [b.name for b in lib.books_for(mara)]
    assert before == ["Grey Gull lore"]  # the card's own book
    lib.attach("mara", "sea")
    lib.attach("mara", "sea")  # once only
    assert lib.attachments() == {"mara": ["sea"]}
    assert [b.name for b in lib.books_for(mara, ["sea"])] == ["Grey Gull lore", "sea"]
    with pytest.raises(LoreError, match="no lorebook named 'nope'"):
        lib.attach("mara", "nope")
    with pytest.raises(LoreError, match="not attached"):
        lib.detach("hale", "sea")
    lib.remove("sea")
    assert lib.attachments() == {} and lib.names() == []
    with pytest.raises(LoreError):
        lib.get("sea")
