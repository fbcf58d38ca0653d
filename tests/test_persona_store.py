"""Persona folders: persona.yaml round trips, lookup by slug/name/path, atomic imports and exports."""
import io
from pathlib import Path

import pytest
import yaml
from PIL import Image

from agent.config import CardLimits
from agent.paths import Home
from agent.persona import CardError, CharacterCard, PersonaStore, UnknownPersona
from agent.persona.card_io import read_card, write_card
from agent.persona.store import load_persona, save_persona, slugify

FIXTURES = Path(__file__).resolve().parents[2] / "shared/fixtures/cards"


@pytest.fixture
def store(tmp_path) -> PersonaStore:
    home = Home(data=tmp_path / "home", cache=tmp_path / "cache")
    return PersonaStore(home, CardLimits(), shipped=tmp_path / "shipped")


def png_bytes(size=(6, 9)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 100, 50)).save(buffer, "PNG")
    return buffer.getvalue()


def make(folder: Path, name: str, **fields) -> Path:
    save_persona(CharacterCard(name=name, **fields), folder)
    return folder


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("name, slug", [
    ("Flux the Cat", "flux-the-cat"), ("Émile  Zoë!", "emile-zoe"), ("../../etc/passwd", "etc-passwd"),
    ("..", None), ("", None), ("セラフィナ", None), ("a/b\\c", "a-b-c"),
])
def test_slugify_is_always_a_safe_folder_name(name, slug):
    result = slugify(name)
    assert result == slug if slug else result.startswith("persona-")
    assert result and "/" not in result and "\\" not in result and ".." not in result
    assert slugify("セラフィナ") != slugify("ミラ")  # names with no ASCII still get distinct slugs


def test_save_and_load_round_trip(tmp_path):
    card = CharacterCard(name="Mira", description="line one\nline two", tags=("a",),
                         extensions={"app": 1}, extra={"unknown": {"x": [1]}})
    persona = save_persona(card, tmp_path / "mira", png_bytes(), {"tts": {"speed": 1.1}, "voice_sample": None})
    assert persona.card == card and persona.slug == "mira" and persona.name == "Mira"
    assert persona.portrait == tmp_path / "mira" / "portrait.png" and persona.voice_sample is None
    assert persona.settings == {"tts": {"speed": 1.1}, "voice_sample": None, "portrait": "portrait.png"}
    text = (tmp_path / "mira" / "persona.yaml").read_text()
    assert "description: |" in text  # multi-line card text stays readable
    assert yaml.safe_load(text)["unknown"] == {"x": [1]}


def test_voice_sample_is_found(tmp_path):
    folder = make(tmp_path / "v", "Voice")
    (folder / "voice.wav").write_bytes(b"RIFF")
    assert load_persona(folder).voice_sample == folder / "voice.wav"


@pytest.mark.parametrize("text, field", [
    ("name: [unclosed", "not valid YAML"),
    ("description: no name here\n", "'name'"),
    ("- a list\n", "top level must be a mapping"),
    ("name: A\npersonae: 3\n", "'personae'"),
    ("name: A\npersonae:\n  portrait: ../../secret.png\n", "'personae.portrait'"),
    ("name: A\npersonae:\n  voice_sample: missing.wav\n", "'personae.voice_sample'"),
    # YAML spells lone surrogates as escapes, as persona.yaml files imported before they were refused hold them
    ('name: A\ndescription: "bad \\uD800 text"\n', "'description': holds a lone surrogate"),
    ('name: A\npersonae:\n  tts: {voice: "\\uDCFF"}\n', "'personae.tts.voice': holds a lone surrogate"),
])
def test_bad_persona_yaml_names_the_file_and_field(tmp_path, text, field):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "persona.yaml").write_text(text)
    with pytest.raises(CardError) as err:
        load_persona(tmp_path / "p")
    assert str(tmp_path / "p" / "persona.yaml") in str(err.value) and field in str(err.value)


def test_list_user_then_shipped_with_shadowing(store, tmp_path):
    make(store.shipped / "mara", "Mara (shipped)")
    make(store.shipped / "pixel", "Pixel")
    make(store.home.personas / "mara", "Mara (mine)")
    make(store.home.personas / "zed", "Zed")
    (store.home.personas / "broken").mkdir()
    (store.home.personas / "broken" / "persona.yaml").write_text("description: nameless\n")
    (store.home.personas / ".import-tmp").mkdir()
    assert [(p.slug, p.name) for p in store.list()] == [
        ("mara", "Mara (mine)"), ("pixel", "Pixel"), ("zed", "Zed")]


def test_get_by_slug_name_and_path(store, tmp_path):
    make(store.shipped / "hale", "Captain Hale")
    make(store.home.personas / "flux-the-cat", "Flux\u00a0the Cat", nickname="Fluffy")
    elsewhere = make(tmp_path / "loose" / "solo", "Solo")
    assert store.get("HALE").name == "Captain Hale"
    assert store.get("captain  hale").slug == "hale"
    assert store.get("flux the cat").slug == "flux-the-cat" and store.get("fluffy").slug == "flux-the-cat"
    assert store.get(str(elsewhere)).name == "Solo" and store.get(elsewhere).name == "Solo"


def test_user_persona_wins_over_shipped_by_name(store):
    make(store.shipped / "hale", "Hale")
    make(store.home.personas / "my-hale", "Hale", description="mine")
    assert store.get("hale").card.description == ""  # the slug matches the shipped folder first
    assert store.get("Hale ").slug == "hale"
    make(store.home.personas / "hale", "Hale", description="shadow")
    assert store.get("hale").card.description == "shadow"


def test_unknown_persona_lists_the_available_ones(store):
    make(store.shipped / "pixel", "Pixel")
    make(store.home.personas / "zed", "Zed")
    with pytest.raises(UnknownPersona, match="available: pixel, zed"):
        store.get("nobody")
    with pytest.raises(UnknownPersona, match="no persona.yaml"):
        store.get("./not/a/folder")


def test_import_png_then_export_each_format(store, tmp_path):
    card = CharacterCard(name="Mira Vale", description="d", extra={"x": 1}, extensions={"y": 2})
    source = write_card(card, png_bytes(), tmp_path / "card.png", "png")
    persona = store.import_file(source)
    assert persona.slug == "mira-vale" and persona.folder == store.home.personas / "mira-vale"
    assert persona.card == card and Image.open(persona.portrait).size == (6, 9)
    assert [p.name for p in store.home.personas.iterdir()] == ["mira-vale"]  # no staging left over
    for fmt in ("png", "json", "charx"):
        out = store.export("Mira Vale", fmt, tmp_path / f"out.{fmt}")
        assert read_card(out, store.limits)[0].name == "Mira Vale"
    (tmp_path / "exports").mkdir()
    assert store.export("mira-vale", "png", tmp_path / "exports") == tmp_path / "exports" / "mira-vale.png"


def test_import_refuses_an_existing_slug_unless_replace(store, tmp_path):
    first = write_card(CharacterCard(name="Twin", description="one"), None, tmp_path / "a.json", "json")
    second = write_card(CharacterCard(name="Twin", description="two"), png_bytes(), tmp_path / "b.png", "png")
    store.import_file(first)
    before = snapshot(store.home.personas)
    with pytest.raises(CardError, match="already exists") as err:
        store.import_file(second)
    assert str(second) in str(err.value) and snapshot(store.home.personas) == before
    assert store.import_file(second, replace=True).card.description == "two"
    assert sorted(p.name for p in store.home.personas.iterdir()) == ["twin"]
    assert store.import_file(first, name="Twin Copy").slug == "twin-copy"


def test_a_card_cannot_set_personae_settings(store, tmp_path):
    path = tmp_path / "sneaky.json"
    path.write_text('{"name": "Sneaky", "personae": {"portrait": "/etc/passwd"}}')
    store.home.personas.mkdir(parents=True)
    with pytest.raises(CardError, match="'personae'"):
        store.import_file(path)
    assert snapshot(store.home.personas) == {}


def test_failed_import_into_a_fresh_home_leaves_no_personas_folder(store, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"name": "Bad", "personae": 1}')
    with pytest.raises(CardError):
        store.import_file(path)
    assert not store.home.personas.exists()


@pytest.mark.parametrize("file_name", ["default_Seraphina_ccv3.png", "default_FluxTheCat.png",
                                       "Default-chan.png", "Grumpy_Purrsnatch.json"])
def test_real_cards_import_and_reexport(store, tmp_path, file_name):
    path = FIXTURES / file_name
    if not path.is_file():
        pytest.skip(f"real card fixture {path} is not on this machine")
    persona = store.import_file(path)
    assert persona.card == read_card(path, store.limits)[0]
    assert (persona.portrait is None) == file_name.endswith(".json")
    out = store.export(persona.slug, "png", tmp_path / "again.png")
    assert read_card(out, store.limits)[0] == persona.card
