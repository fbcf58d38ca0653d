"""Reads and writes character card files: PNG (tEXt/iTXt/zTXt `ccv3`/`chara`), plain JSON and CHARX zips.

Cards are untrusted: every size is capped by `CardLimits` before anything is decoded, and every failure
is a `CardError` naming the file. `read_card` hands the store a `CharacterCard` and the portrait bytes.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Optional

from agent.atomic import write_bytes_atomically
from agent.config import CardLimits
from agent.persona.card import CardError, CharacterCard

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
CARD_KEYWORDS = ("ccv3", "chara")  # read in this order, as SillyTavern does
FORMATS = ("png", "json", "charx")
CHARX_ICON = "assets/icon/images/main.png"
RATIO_FLOOR = 64 * 1024  # entries this small can't be zip bombs, whatever their ratio


# --- PNG chunks ---

def _keyword(data: bytes, body: int, length: int) -> str:
    """The keyword of a text chunk (at most 79 Latin-1 bytes before a NUL), lowercased."""
    head = data[body:body + min(length, 80)]
    return head.split(b"\0", 1)[0].decode("latin-1").lower()


def _is_card_chunk(keyword: str) -> bool:
    return keyword in CARD_KEYWORDS or keyword.startswith("chara-ext-asset_")


def png_chunks(data: bytes, where: str, max_chunk: Optional[int] = None) -> list[tuple[bytes, int, int]]:
    """Walks a PNG up to IEND, checking lengths and CRCs: [(type, start, end)] spanning whole chunks.

    A card text chunk longer than `max_chunk` is refused before its bytes are touched.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise CardError(f"{where}: corrupt PNG: bad signature")
    chunks, pos, view = [], len(PNG_SIGNATURE), memoryview(data)
    while True:
        if pos + 8 > len(data):
            raise CardError(f"{where}: corrupt PNG: truncated at byte {pos} (no IEND chunk)")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        body, end = pos + 8, pos + 12 + length
        name = ctype.decode("latin-1")
        if max_chunk is not None and ctype in TEXT_CHUNKS and length > max_chunk \
                and _is_card_chunk(_keyword(data, body, length)):
            raise CardError(f"{where}: {name} chunk at byte {pos} is {length} bytes, over the "
                            f"{max_chunk}-byte limit for a card chunk")
        if length > 0x7FFFFFFF or end > len(data):
            raise CardError(f"{where}: corrupt PNG: truncated {name} chunk at byte {pos}")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[pos + 4:end - 4]) != crc:
            raise CardError(f"{where}: corrupt PNG: bad CRC in {name} chunk at byte {pos}")
        chunks.append((ctype, pos, end))
        pos = end
        if ctype == b"IEND":
            return chunks


def _inflate(blob: bytes, limit: int, where: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(blob, limit + 1)
    except zlib.error as e:
        raise CardError(f"{where}: corrupt compressed text: {e}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise CardError(f"{where}: compressed text inflates past the {limit}-byte limit")
    return out


def _chunk_text(ctype: bytes, body: bytes, limit: int, where: str) -> str:
    """The text of a tEXt, zTXt or iTXt chunk body."""
    _, _, rest = body.partition(b"\0")
    if ctype == b"tEXt":
        return rest.decode("latin-1")
    if ctype == b"zTXt":
        return _inflate(rest[1:], limit, where).decode("latin-1")
    compressed, rest = rest[:1] == b"\1", rest[2:]
    _, _, rest = rest.partition(b"\0")  # language tag
    _, _, text = rest.partition(b"\0")  # translated keyword
    try:
        return (_inflate(text, limit, where) if compressed else text).decode("utf-8")
    except UnicodeDecodeError:
        raise CardError(f"{where}: iTXt text is not UTF-8") from None


def _card_json(text: str, limits: CardLimits, where: str) -> object:
    """Decodes a chunk's base64 JSON (raw JSON is tolerated too)."""
    text = text.strip()
    if text.startswith("{"):
        raw = text.encode("utf-8")
    else:
        packed = "".join(text.split())
        if len(packed) * 3 // 4 > limits.max_json_bytes:
            raise CardError(f"{where}: card JSON is over the {limits.max_json_bytes}-byte limit")
        try:
            raw = base64.b64decode(packed + "=" * (-len(packed) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise CardError(f"{where}: not base64") from None
    return _parse_json(raw, limits, where)


def _parse_json(raw: bytes, limits: CardLimits, where: str) -> object:
    if len(raw) > limits.max_json_bytes:
        raise CardError(f"{where}: card JSON is {len(raw)} bytes, over the {limits.max_json_bytes}-byte limit")
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise CardError(f"{where}: card JSON is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise CardError(f"{where}: not JSON: {e}") from None


def _read_png(data: bytes, path: str, limits: CardLimits) -> tuple[CharacterCard, bytes]:
    chunks = png_chunks(data, path, limits.max_chunk_bytes)
    found: dict[str, tuple[bytes, bytes]] = {}
    for ctype, start, end in chunks:
        if ctype in TEXT_CHUNKS:
            keyword = _keyword(data, start + 8, end - start - 12)
            if keyword in CARD_KEYWORDS:
                found.setdefault(keyword, (ctype, data[start + 8:end - 4]))
    if not found:
        raise CardError(f"{path}: no card inside (the PNG has no 'ccv3' or 'chara' text chunk)")
    first_error = None
    for keyword in (k for k in CARD_KEYWORDS if k in found):
        where = f"{path} ({keyword} chunk)"
        try:
            obj = _card_json(_chunk_text(*found[keyword], limits.max_chunk_bytes, where), limits, where)
            card = CharacterCard.from_dict(obj, where)
            break
        except CardError as e:  # a broken ccv3 falls back to chara; the first error is the one reported
            first_error = first_error or e
    else:
        raise first_error
    kept = b"".join(data[s:e] for t, s, e in chunks
                    if t not in TEXT_CHUNKS or not _is_card_chunk(_keyword(data, s + 8, e - s - 12)))
    return card, PNG_SIGNATURE + kept


# --- CHARX ---

def _check_zip(archive: zipfile.ZipFile, path: str, limits: CardLimits) -> None:
    """Refuses too many entries, zip bombs and names that climb out of the archive."""
    entries = archive.infolist()
    if len(entries) > limits.max_zip_entries:
        raise CardError(f"{path}: CHARX has {len(entries)} entries, over the limit of {limits.max_zip_entries}")
    total = 0
    for info in entries:
        parts = info.filename.replace("\\", "/").split("/")
        if info.filename.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise CardError(f"{path}: CHARX entry {info.filename!r} escapes the archive (path traversal)")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR and ratio > limits.max_zip_ratio:
            raise CardError(f"{path}: CHARX entry {info.filename!r} expands {ratio:.0f}x, over the "
                            f"{limits.max_zip_ratio:.0f}x limit (zip bomb)")
        total += info.file_size
    if total > limits.max_unzipped_bytes:
        raise CardError(f"{path}: CHARX unpacks to {total} bytes, over the {limits.max_unzipped_bytes}-byte limit")


def _charx_icon(card: CharacterCard) -> Optional[str]:
    """The archive member holding the main icon, from the card's embedded asset list."""
    icons = [a for a in card.assets if a.get("type") == "icon" and isinstance(a.get("uri"), str)
             and a["uri"].startswith(("embeded://", "embedded://"))]
    icons.sort(key=lambda a: a.get("name") != "main")
    return icons[0]["uri"].split("://", 1)[1] if icons else None


def _read_charx(data: bytes, path: str, limits: CardLimits) -> tuple[CharacterCard, Optional[bytes]]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            _check_zip(archive, path, limits)
            names = set(archive.namelist())
            if "card.json" not in names:
                raise CardError(f"{path}: no card inside (the CHARX has no card.json)")
            raw = archive.open("card.json").read(limits.max_json_bytes + 1)
            card = CharacterCard.from_dict(_parse_json(raw, limits, f"{path} (card.json)"), path)
            icon = _charx_icon(card)
            portrait = archive.read(icon) if icon in names else None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError, EOFError,
            zlib.error, OSError) as e:
        raise CardError(f"{path}: corrupt CHARX zip: {e}") from None
    return card, portrait


# --- reading ---

def read_bounded(path: Path, limit: int, *, what: str = "card", error: type[ValueError] = CardError) -> bytes:
    """The file's bytes, refused (as `error`, naming the file) when over `limit` before or while reading."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise error(f"{path}: file is {size} bytes, over the {limit}-byte limit for a {what}")
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise error(f"{path}: can't read the {what} file: {e.strerror or e}") from None
    if len(data) > limit:  # grew since stat
        raise error(f"{path}: file is over the {limit}-byte limit for a {what}")
    return data


def read_card(path: str | Path, limits: CardLimits) -> tuple[CharacterCard, Optional[bytes]]:
    """Reads a PNG, JSON or CHARX card (chosen by content): the card and its portrait image bytes, if any.

    A PNG's portrait comes back without its card chunks; a CHARX's is its main icon asset, as stored.
    """
    path = Path(path)
    data = read_bounded(path, limits.max_file_bytes)
    where = str(path)
    if data.startswith(PNG_SIGNATURE) or path.suffix.lower() == ".png":
        return _read_png(data, where, limits)
    if data.startswith(ZIP_SIGNATURES):
        return _read_charx(data, where, limits)
    if data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"["):
        return CharacterCard.from_dict(_parse_json(data, limits, where), where), None
    raise CardError(f"{where}: not a card (expected a PNG, JSON or CHARX file)")


# --- writing ---

def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _text_chunk(keyword: str, document: dict) -> bytes:
    payload = base64.b64encode(json.dumps(document, ensure_ascii=False, default=str).encode("utf-8"))
    return _chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + payload)


def _placeholder(name: str) -> bytes:
    """A plain 400x600 portrait in a colour picked from the name, for cards without one."""
    from PIL import Image
    r, g, b = hashlib.sha256(name.encode("utf-8")).digest()[:3]
    buffer = io.BytesIO()
    Image.new("RGB", (400, 600), (64 + r // 2, 64 + g // 2, 64 + b // 2)).save(buffer, "PNG")
    return buffer.getvalue()


def as_png(image: bytes, where: str) -> bytes:
    """The image unchanged when it is a PNG, else converted to one with Pillow."""
    if image.startswith(PNG_SIGNATURE):
        return image
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(image)) as picture:
            buffer = io.BytesIO()
            picture.save(buffer, "PNG")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise CardError(f"{where}: portrait is not a readable image: {e}") from None
    return buffer.getvalue()


def _portable(card: CharacterCard, icon: Optional[dict] = None) -> CharacterCard:
    """Drops asset entries whose files don't travel with the card (embedded ones), adding `icon` first."""
    def travels(asset: dict) -> bool:
        if icon and asset.get("type") == "icon" and asset.get("name") == "main":
            return False
        return not str(asset.get("uri", "")).startswith(("embeded://", "embedded://", "__asset:"))
    kept = tuple(a for a in card.assets if travels(a))
    return dataclasses.replace(card, assets=((icon,) if icon else ()) + kept)


def _png_bytes(card: CharacterCard, portrait: Optional[bytes], where: str) -> bytes:
    """The portrait PNG with any old card chunks swapped for `chara` (V2) and `ccv3` (V3) before IEND."""
    image = as_png(portrait, where) if portrait is not None else _placeholder(card.name)
    chunks = png_chunks(image, f"{where} (portrait)")
    body = [image[s:e] for t, s, e in chunks[:-1]
            if t not in TEXT_CHUNKS or not _is_card_chunk(_keyword(image, s + 8, e - s - 12))]
    card = _portable(card)
    body += [_text_chunk("chara", card.to_v2()), _text_chunk("ccv3", card.to_v3())]
    iend_start, iend_end = chunks[-1][1:]
    return PNG_SIGNATURE + b"".join(body) + image[iend_start:iend_end]


def _charx_bytes(card: CharacterCard, portrait: Optional[bytes], where: str) -> bytes:
    icon = {"type": "icon", "uri": f"embeded://{CHARX_ICON}", "name": "main", "ext": "png"}
    image = as_png(portrait, where) if portrait is not None else _placeholder(card.name)
    document = json.dumps(_portable(card, icon).to_v3(), ensure_ascii=False, indent=2, default=str)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", document.encode("utf-8"))
        archive.writestr(CHARX_ICON, image, compress_type=zipfile.ZIP_STORED)
    return buffer.getvalue()


def write_card(card: CharacterCard, portrait: Optional[bytes], path: str | Path, fmt: str) -> Path:
    """Writes `card` as a SillyTavern-readable "png", "json" (V2) or "charx" (V3) file; returns the path.

    Without a portrait, PNG and CHARX get a plain placeholder picture. The file is replaced atomically.
    """
    path = Path(path)
    if fmt == "png":
        data = _png_bytes(card, portrait, str(path))
    elif fmt == "json":
        data = json.dumps(_portable(card).to_v2(), ensure_ascii=False, indent=2, default=str).encode("utf-8")
    elif fmt == "charx":
        data = _charx_bytes(card, portrait, str(path))
    else:
        raise CardError(f"{path}: unknown card format {fmt!r} (valid: {', '.join(FORMATS)})")
    try:
        write_bytes_atomically(path, data)
    except OSError as e:
        raise CardError(f"{path}: can't write the card: {e.strerror or e}") from None
    return path
