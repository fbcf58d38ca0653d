"""Card files: PNG/JSON/CHARX round trips, the real cards in shared/fixtures, and hostile files."""
import base64
import dataclasses
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from agent.config import CardLimits
from agent.paths import Home
from agent.persona.card import CardError, CharacterCard
from agent.persona.card_io import png_chunks, read_card, write_card
from agent.persona.store import PersonaStore

FIXTURES = Path(__file__).resolve().parents[2] / "shared/fixtures/cards"
LIMITS = CardLimits()
BACKGROUND = {"type": "background", "uri": "https://example.org/bg.png", "name": "bg", "ext": "png"}


def sample_card() -> CharacterCard:
    return CharacterCard(
        name="Émile Zhou", description="Línea uno\nline two — 二", first_mes="Hi {{user}}",
        alternate_greetings=("Yo",), tags=("a", "b"), character_book={"entries": [{"keys": ["k"], "content": "c"}]},
        extensions={"depth_prompt": {"depth": 4}, "custom": [1, None]}, nickname="Em",
        group_only_greetings=("Hello all",), creation_date=1700000000, assets=(BACKGROUND,),
        extra={"mystery": {"nested": ["kept"]}})


def tiny_png(size=(8, 12), mode="RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def png_with(*extra_chunks: bytes) -> bytes:
    """A tiny PNG with `extra_chunks` inserted before IEND."""
    image = tiny_png()
    return image[:-12] + b"".join(extra_chunks) + image[-12:]


def b64(document) -> bytes:
    return base64.b64encode(json.dumps(document).encode("utf-8"))


def text_keywords(data: bytes) -> list[str]:
    return [data[s + 8:e - 4].split(b"\0")[0].decode() for t, s, e in png_chunks(data, "x") if t == b"tEXt"]


# --- round trips ---

@pytest.mark.parametrize("fmt", ["png", "json", "charx"])
def test_every_format_round_trips(tmp_path, fmt):
    card = sample_card()
    path = write_card(card, tiny_png(), tmp_path / f"c.{fmt}", fmt)
    back, portrait = read_card(path, LIMITS)
    if fmt == "charx":  # the portrait travels as the main icon asset
        assert back.assets[0]["uri"] == "embeded://assets/icon/images/main.png" and back.assets[1:] == (BACKGROUND,)
        back = dataclasses.replace(back, assets=card.assets)
    assert back == card
    assert (portrait is None) == (fmt == "json")
    if portrait is not None:
        assert Image.open(io.BytesIO(portrait)).size == (8, 12)


def test_png_carries_v2_chara_and_v3_ccv3(tmp_path):
    data = write_card(sample_card(), None, tmp_path / "c.png", "png").read_bytes()
    assert text_keywords(data) == ["chara", "ccv3"]
    bodies = [data[s + 8:e - 4].split(b"\0", 1) for t, s, e in png_chunks(data, "x") if t == b"tEXt"]
    docs = {key.decode(): json.loads(base64.b64decode(text)) for key, text in bodies}
    assert docs["chara"]["spec"] == "chara_card_v2" and docs["ccv3"]["spec"] == "chara_card_v3"
    assert docs["chara"]["name"] == docs["ccv3"]["name"] == "Émile Zhou"  # V1 mirror for old readers
    with Image.open(io.BytesIO(data)) as image:  # an independent PNG reader sees both chunks too
        assert set(image.text) == {"chara", "ccv3"}


def test_placeholder_portrait_when_none_is_given(tmp_path):
    path = write_card(CharacterCard(name="Plain"), None, tmp_path / "p.png", "png")
    with Image.open(path) as image:
        assert image.size == (400, 600)


def test_rewriting_replaces_old_card_chunks(tmp_path):
    first = write_card(CharacterCard(name="Old"), None, tmp_path / "a.png", "png")
    _, portrait = read_card(first, LIMITS)
    assert text_keywords(portrait) == []
    second = write_card(CharacterCard(name="New"), first.read_bytes(), tmp_path / "b.png", "png")
    assert text_keywords(second.read_bytes()) == ["chara", "ccv3"]
    assert read_card(second, LIMITS)[0].name == "New"


def test_non_png_portrait_is_converted(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (5, 7)).save(buffer, "JPEG")
    path = write_card(CharacterCard(name="J"), buffer.getvalue(), tmp_path / "j.png", "png")
    assert Image.open(path).size == (5, 7)


def test_ccv3_is_read_before_chara(tmp_path):
    path = tmp_path / "both.png"
    path.write_bytes(png_with(chunk(b"tEXt", b"chara\0" + b64({"name": "V2 name"})),
                              chunk(b"tEXt", b"ccv3\0" + b64({"spec": "chara_card_v3", "data": {"name": "V3 name"}}))))
    assert read_card(path, LIMITS)[0].name == "V3 name"


def test_broken_ccv3_falls_back_to_chara(tmp_path):
    path = tmp_path / "fallback.png"
    path.write_bytes(png_with(chunk(b"tEXt", b"ccv3\0!!!"), chunk(b"tEXt", b"chara\0" + b64({"name": "Good"}))))
    assert read_card(path, LIMITS)[0].name == "Good"


def test_itxt_and_ztxt_chunks(tmp_path):
    itxt = tmp_path / "i.png"
    itxt.write_bytes(png_with(chunk(b"iTXt", b"chara\0\1\0\0\0" + zlib.compress(b64({"name": "Itxt"})))))
    ztxt = tmp_path / "z.png"
    ztxt.write_bytes(png_with(chunk(b"zTXt", b"chara\0\0" + zlib.compress(b64({"name": "Ztxt"})))))
    assert read_card(itxt, LIMITS)[0].name == "Itxt" and read_card(ztxt, LIMITS)[0].name == "Ztxt"


def test_json_with_bom(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"name": "Bom"}).encode())
    assert read_card(path, LIMITS) == (CharacterCard(name="Bom"), None)


# --- real cards (shared/fixtures/cards, see PROVENANCE.md there) ---

REAL = {"default_Seraphina.png": "Seraphina", "default_Seraphina_ccv3.png": "Seraphina",
        "default_CodingSensei.png": "Coding Sensei", "default_FluxTheCat.png": "Flux the Cat",
        "Default-chan.png": "Default-chan", "Grumpy_Purrsnatch.json": "Grumpy Purrsnatch",
        "Grumpy_Purrsnatch.card.png": "Grumpy Purrsnatch"}


def real(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"real card fixture {path} is not on this machine")
    return path


@pytest.mark.parametrize("file_name", sorted(REAL))
@pytest.mark.parametrize("fmt", ["png", "json", "charx"])
def test_real_cards_read_and_round_trip(tmp_path, file_name, fmt):
    card, portrait = read_card(real(file_name), LIMITS)
    assert card.name == REAL[file_name]
    assert "\r" not in card.description + card.first_mes and "\u00a0" not in card.description
    again, _ = read_card(write_card(card, portrait, tmp_path / f"out.{fmt}", fmt), LIMITS)
    if fmt == "charx":
        again = dataclasses.replace(again, assets=card.assets)
    assert again == card


def test_real_png_portraits_keep_the_picture_and_drop_the_card():
    path = real("default_Seraphina_ccv3.png")
    _, portrait = read_card(path, LIMITS)
    assert text_keywords(portrait) == []
    with Image.open(io.BytesIO(portrait)) as image:
        assert image.size == (400, 600)


def test_real_seraphina_lorebook_and_v3_fields():
    v2, _ = read_card(real("default_Seraphina.png"), LIMITS)
    v3, _ = read_card(real("default_Seraphina_ccv3.png"), LIMITS)
    assert len(v2.character_book["entries"]) == 4 and len(v3.character_book["entries"]) == 4
    assert v3.extensions["depth_prompt"]["depth"] == 4
    assert v3.character_book["entries"][0]["use_regex"] is True  # V3 entry field, kept verbatim
    assert v2.extra == {} and v3.extra == {}  # the V1 mirror is not mistaken for unknown fields


def test_real_flux_mirror_disagrees_and_data_wins():
    card, _ = read_card(real("default_FluxTheCat.png"), LIMITS)
    assert card.creator == "@kallmeflocc on Discord" and card.tags == ()


def test_real_default_chan_is_ccv3_only_without_group_greetings():
    card, portrait = read_card(real("Default-chan.png"), LIMITS)
    assert card.group_only_greetings == () and len(card.alternate_greetings) == 2 and len(card.tags) == 5
    assert Image.open(io.BytesIO(portrait)).mode == "RGB"


def test_real_v1_json_mixing_pygmalion_and_tavern_names():
    card, portrait = read_card(real("Grumpy_Purrsnatch.json"), LIMITS)
    assert portrait is None and not card.description.startswith(" ")
    assert set(card.extra) == {"char_greeting", "metadata"}  # the differing longer greeting is kept
    assert len(card.extra["char_greeting"]) > len(card.first_mes)


# --- hostile files: each is refused with the file named, and an import leaves personas/ untouched ---

def zip_bytes(entries: dict, method=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def good_png() -> bytes:
    return png_with(chunk(b"tEXt", b"chara\0" + b64({"name": "Fine", "description": "x" * 3000})))


def bad_crc() -> bytes:
    data = bytearray(good_png())
    data[data.index(b"chara") + 10] ^= 0x01
    return bytes(data)


CARD_JSON = json.dumps({"spec": "chara_card_v3", "data": {"name": "Z"}})
HOSTILE = {  # name -> (file name, bytes, limits, what the message says)
    "truncated png": ("t.png", good_png()[:-40], LIMITS, "truncated"),
    "bad crc": ("c.png", bad_crc(), LIMITS, "bad CRC"),
    "oversize chunk": ("o.png", good_png(), CardLimits(max_chunk_bytes=1000), "over the 1000-byte limit"),
    "oversize file": ("f.png", good_png(), CardLimits(max_file_bytes=500), "over the 500-byte limit"),
    "not base64": ("b.png", png_with(chunk(b"tEXt", b"chara\0@@not base64@@")), LIMITS, "not base64"),
    "base64 of not json": ("n.png", png_with(chunk(b"tEXt", b"chara\0" + base64.b64encode(b"hello"))),
                           LIMITS, "not JSON"),
    "no card chunk": ("p.png", tiny_png(), LIMITS, "no card inside"),
    "ztxt bomb": ("z.png", png_with(chunk(b"zTXt", b"chara\0\0" + zlib.compress(b"A" * 3_000_000))),
                  CardLimits(max_chunk_bytes=100_000), "inflates past"),
    "json list": ("l.json", b'[{"name": "A"}]', LIMITS, "must be a JSON object"),
    "json too big": ("big.json", json.dumps({"name": "A", "description": "x" * 5000}).encode(),
                     CardLimits(max_json_bytes=1000), "over the 1000-byte limit"),
    "not a card": ("x.txt", b"hello there", LIMITS, "not a card"),
    "zip too many entries": ("m.charx", zip_bytes({"card.json": CARD_JSON, **{f"f{i}": "x" for i in range(300)}}),
                             LIMITS, "over the limit of 256"),
    "zip bomb": ("bomb.charx", zip_bytes({"card.json": CARD_JSON, "assets/x.bin": b"\0" * 5_000_000}),
                 LIMITS, "zip bomb"),
    "zip too big unpacked": ("u.charx", zip_bytes({"card.json": CARD_JSON, "a": b"x" * 5000},
                                                  zipfile.ZIP_STORED),
                             CardLimits(max_unzipped_bytes=4000), "unpacks to"),
    "zip path traversal": ("trav.charx", zip_bytes({"card.json": CARD_JSON, "../../evil.txt": "x"}),
                           LIMITS, "path traversal"),
    "zip without card.json": ("e.charx", zip_bytes({"other.json": CARD_JSON}), LIMITS, "no card.json"),
    "corrupt zip": ("k.charx", zip_bytes({"card.json": CARD_JSON})[:-30], LIMITS, "corrupt CHARX"),
    # JSON's "\ud800" decodes to text nothing can encode: refused naming the field, never stored
    "lone surrogate in a json name": ("s.json", json.dumps({"spec": "chara_card_v2", "data": {"name": "A\ud800"}})
                                      .encode(), LIMITS, "field 'data.name': holds a lone surrogate \\(U\\+D800\\)"),
    "lone surrogate in a png chunk": ("s.png", png_with(chunk(b"tEXt", b"ccv3\0" + b64(
        {"spec": "chara_card_v3", "data": {"name": "A", "description": "\udcff"}}))), LIMITS,
        "ccv3 chunk.*'data.description'.*U\\+DCFF"),
    "lone surrogate in a charx": ("s.charx", zip_bytes({"card.json": json.dumps(
        {"spec": "chara_card_v3", "data": {"name": "A", "alternate_greetings": ["Hi", "\ud800"]}})}), LIMITS,
        "'data.alternate_greetings\\[1\\]': holds a lone surrogate"),
    "lone surrogate in a v1 key": ("k.json", json.dumps({"name": "A", "extensions": {"\ud800": 1}}).encode(),
                                   LIMITS, r"'extensions.\\ud800': holds a lone surrogate"),
}


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_are_refused_naming_the_file(tmp_path, case):
    file_name, data, limits, message = HOSTILE[case]
    path = tmp_path / file_name
    path.write_bytes(data)
    with pytest.raises(CardError, match=message) as err:
        read_card(path, limits)
    assert str(path) in str(err.value)

    home = Home(data=tmp_path / "home", cache=tmp_path / "cache")
    store = PersonaStore(home, limits, shipped=tmp_path / "shipped")
    (home.personas / "existing").mkdir(parents=True)
    (home.personas / "existing" / "persona.yaml").write_text("name: Existing\n")
    before = snapshot(home.personas)
    with pytest.raises(CardError) as err:
        store.import_file(path)
    assert str(path) in str(err.value)
    assert snapshot(home.personas) == before
