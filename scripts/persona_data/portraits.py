"""Draws a persona's head-and-shoulders portrait from its `look` (skin, hair, eyes, hat, outfit, accessories) with Pillow.

draw_portrait hands a 448x448 RGBA image to save_portrait, which writes the 224x224 64-colour PNG.
"""
from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

from .backgrounds import BACKGROUNDS
from .canvas import CLOTH, EYES, HAIR, PORTRAIT_COLOURS, PORTRAIT_SIZE, SKIN, B, P, PTS, mix, shade

CX, CY, RX, RY = 112, 98, 33, 40  # the head


def hair_back(d, style, colour):
    if style in ("long",):
        d.rounded_rectangle(B(CX - 42, CY - 30, CX + 42, CY + 84), radius=P(24), fill=colour)
    elif style == "braids":
        for s in (-1, 1):
            x = CX + s * 34
            d.rounded_rectangle(B(x - 7, CY - 10, x + 7, CY + 96), radius=P(7), fill=colour)
            for y in range(int(CY), int(CY + 96), 10):
                d.line(PTS((x - 6, y), (x + 6, y + 4)), fill=shade(colour, 0.75), width=P(1.5))
    elif style == "locs":
        for k in range(-4, 5):
            x = CX + k * 10
            d.line(PTS((x, CY - 30), (x * 1.0 + k * 2, CY + 80 - abs(k) * 4)), fill=colour, width=P(7))
    elif style == "ponytail":
        d.ellipse(B(CX + 26, CY - 30, CX + 50, CY + 50), fill=colour)
    elif style == "bob":
        d.rounded_rectangle(B(CX - 42, CY - 38, CX + 42, CY + 30), radius=P(22), fill=colour)
    elif style == "curly":
        for a in range(0, 360, 30):
            r = math.radians(a)
            x, y = CX + 36 * math.cos(r), CY - 6 + 40 * math.sin(r) * 0.9
            if y < CY + 30:
                d.ellipse(B(x - 12, y - 12, x + 12, y + 12), fill=colour)


def hair_front(d, style, colour):
    top = CY - RY
    hi = mix(colour, (255, 255, 255), 0.25)
    if style in ("bald", "none"):
        return
    if style == "tonsure":
        for s in (-1, 1):
            d.chord(B(CX + s * 26 - 12, CY - 26, CX + s * 26 + 12, CY + 6), 90 - s * 90, 270 - s * 90, fill=colour)
        return
    if style == "slicked":
        d.chord(B(CX - RX - 2, top - 4, CX + RX + 2, CY + 10), 180, 360, fill=colour)
        d.polygon(PTS((CX - 6, top + 18), (CX, top + 30), (CX + 6, top + 18)), fill=colour)
        return
    if style == "spiky":
        pts = [(CX - RX - 4, CY - 6)]
        for k in range(9):
            x = CX - RX + k * (2 * RX) / 8
            pts += [(x - 4, top + 6), (x, top - 14 - (k % 3) * 4)]
        pts += [(CX + RX + 4, CY - 6)]
        d.polygon(PTS(*pts), fill=colour)
        d.chord(B(CX - RX - 2, top - 2, CX + RX + 2, CY + 4), 180, 360, fill=colour)
        return
    if style == "undercut":
        d.chord(B(CX - RX + 2, top - 10, CX + RX + 10, CY - 4), 160, 360, fill=colour)
        d.polygon(PTS((CX - 20, top + 6), (CX + 30, top - 6), (CX + 36, top + 20)), fill=colour)
        return
    if style == "beehive":
        d.ellipse(B(CX - 32, top - 36, CX + 32, top + 24), fill=colour)
        d.arc(B(CX - 22, top - 28, CX + 22, top + 10), 200, 340, fill=hi, width=P(2))
    if style == "bun":
        d.ellipse(B(CX - 16, top - 20, CX + 16, top + 8), fill=colour)
    if style == "curly":
        for k in range(7):
            x = CX - RX + k * RX / 3
            d.ellipse(B(x - 11, top - 6, x + 11, top + 16), fill=colour)
    # a cap of hair over the crown with a side parting
    d.chord(B(CX - RX - 3, top - 4, CX + RX + 3, CY + 16), 180, 360, fill=colour)
    d.polygon(PTS((CX - RX - 3, CY - 2), (CX - 8, top + 12), (CX - RX + 4, CY + 14)), fill=colour)
    if style in ("long", "bob", "braids", "locs"):
        for s in (-1, 1):
            d.rectangle(B(CX + s * (RX + 1) - 5, CY - 10, CX + s * (RX + 1) + 5, CY + (40 if style == "long" else 26)), fill=colour)
    d.arc(B(CX - 20, top + 2, CX + 16, top + 30), 200, 300, fill=hi, width=P(2))


def face(d, look):
    skin = SKIN.get(look["skin"], SKIN["fair"])
    dark = shade(skin, 0.82)
    robot = look.get("face") == "robot"
    d.rectangle(B(CX - 12, CY + 26, CX + 12, CY + 62), fill=dark)  # neck
    if robot:
        d.rounded_rectangle(B(CX - RX, CY - RY + 4, CX + RX, CY + RY - 2), radius=P(12), fill=skin)
        d.rounded_rectangle(B(CX - RX + 4, CY - RY + 8, CX + RX - 4, CY - RY + 14), radius=P(3), fill=shade(skin, 0.9))
        for x, y in ((CX - RX + 5, CY - RY + 20), (CX + RX - 5, CY - RY + 20), (CX - RX + 5, CY + RY - 10), (CX + RX - 5, CY + RY - 10)):
            d.ellipse(B(x - 2, y - 2, x + 2, y + 2), fill=shade(skin, 0.6))
        for s in (-1, 1):
            d.rectangle(B(CX + s * (RX + 5) - 4, CY - 8, CX + s * (RX + 5) + 4, CY + 12), fill=shade(skin, 0.7))
        return
    pointed = "pointed_ears" in look.get("accessories", [])
    for s in (-1, 1):
        if pointed:
            d.polygon(PTS((CX + s * (RX - 4), CY - 6), (CX + s * (RX + 16), CY - 22), (CX + s * (RX - 2), CY + 14)), fill=skin)
        else:
            d.ellipse(B(CX + s * RX - 6, CY - 6, CX + s * RX + 6, CY + 14), fill=skin)
    d.ellipse(B(CX - RX, CY - RY, CX + RX, CY + RY), fill=skin)


def features(d, look):
    skin = SKIN.get(look["skin"], SKIN["fair"])
    acc = look.get("accessories", [])
    eye_y = CY + 2
    iris = EYES.get(look.get("eyes", "brown"), EYES["brown"])
    if look.get("face") == "robot":
        if "single_optic" in acc:
            glow = {"brass": (255, 190, 70), "copper": (255, 190, 70)}.get(look["skin"], (90, 200, 255))
            d.ellipse(B(CX - 11, eye_y - 11, CX + 11, eye_y + 11), fill=(20, 24, 30))
            d.ellipse(B(CX - 7, eye_y - 7, CX + 7, eye_y + 7), fill=iris if look.get("eyes") else glow)
            d.ellipse(B(CX - 2, eye_y - 5, CX + 2, eye_y - 1), fill=(255, 255, 255))
        else:
            for s in (-1, 1):
                x = CX + s * 14
                d.ellipse(B(x - 7, eye_y - 7, x + 7, eye_y + 7), fill=(30, 30, 36))
                d.ellipse(B(x - 4.5, eye_y - 4.5, x + 4.5, eye_y + 4.5), fill=iris)
        for k in range(5):
            d.rectangle(B(CX - 14 + k * 6, CY + 22, CX - 10 + k * 6, CY + 27), fill=shade(skin, 0.55))
        if "monocle" in acc:
            d.ellipse(B(CX + 4, eye_y - 10, CX + 24, eye_y + 10), outline=(230, 200, 110), width=P(2))
        return
    brow = HAIR.get(look.get("hair"), None) or shade(skin, 0.55)
    brow = shade(brow, 0.8)
    patch = "eyepatch" in acc
    for s in (-1, 1):
        x = CX + s * 14
        if patch and s == 1:
            continue
        d.ellipse(B(x - 6.5, eye_y - 4, x + 6.5, eye_y + 4), fill=(250, 246, 238))
        d.ellipse(B(x - 3.5, eye_y - 3.5, x + 3.5, eye_y + 3.5), fill=iris)
        d.ellipse(B(x - 1.5, eye_y - 1.5, x + 1.5, eye_y + 1.5), fill=(20, 16, 14))
        d.ellipse(B(x + 0.5, eye_y - 2.5, x + 2, eye_y - 1), fill=(255, 255, 255))
        inner = {"frown": 2.5, "sad": -2.5}.get(look.get("expression"), 0)  # inner end lower = frown
        d.line(PTS((x + s * 7, eye_y - 9), (x - s * 6, eye_y - 9 + inner)), fill=brow, width=P(2.5))
    if patch:
        d.ellipse(B(CX + 7, eye_y - 7, CX + 21, eye_y + 7), fill=(20, 20, 22))
        d.line(PTS((CX - RX, CY - 20), (CX + 30, eye_y - 2)), fill=(20, 20, 22), width=P(1.5))
    if "cyber_eye" in acc:
        d.ellipse(B(CX + 7, eye_y - 6, CX + 21, eye_y + 6), fill=(60, 60, 70))
        d.ellipse(B(CX + 10, eye_y - 3, CX + 18, eye_y + 3), fill=(255, 50, 50))
    d.line(PTS((CX, CY + 6), (CX - 3, CY + 15), (CX + 2, CY + 16)), fill=shade(skin, 0.72), width=P(1.5))  # nose
    mouth_y = CY + 24
    lip = mix(shade(skin, 0.62), (170, 60, 60), 0.35)
    expr = look.get("expression", "smile")
    if expr == "grin":
        d.chord(B(CX - 12, mouth_y - 6, CX + 12, mouth_y + 8), 0, 180, fill=(110, 36, 48))
        d.chord(B(CX - 9, mouth_y - 2, CX + 9, mouth_y + 3), 0, 180, fill=(250, 246, 240))
    elif expr == "smile":
        d.arc(B(CX - 10, mouth_y - 8, CX + 10, mouth_y + 4), 20, 160, fill=lip, width=P(2.5))
    elif expr == "smirk":
        d.line(PTS((CX - 9, mouth_y), (CX + 4, mouth_y), (CX + 10, mouth_y - 4)), fill=lip, width=P(2.5))
    elif expr == "frown":
        d.arc(B(CX - 9, mouth_y, CX + 9, mouth_y + 10), 200, 340, fill=lip, width=P(2.5))
    elif expr == "sad":
        d.arc(B(CX - 8, mouth_y + 1, CX + 8, mouth_y + 8), 200, 340, fill=lip, width=P(2))
    elif expr == "open":
        d.ellipse(B(CX - 6, mouth_y - 4, CX + 6, mouth_y + 6), fill=(110, 36, 48))
        d.rectangle(B(CX - 3, mouth_y - 4, CX + 3, mouth_y - 1), fill=(250, 246, 240))
    else:  # flat / calm
        d.line(PTS((CX - 8, mouth_y), (CX + 8, mouth_y)), fill=lip, width=P(2.5))
    hair = HAIR.get(look.get("hair"), (90, 90, 90))
    if "beard" in acc:
        d.chord(B(CX - RX + 1, CY - 4, CX + RX - 1, CY + RY + 22), 0, 180, fill=hair)
        d.ellipse(B(CX - 9, mouth_y - 4, CX + 9, mouth_y + 5), fill=shade(hair, 0.6))
        d.chord(B(CX - 12, mouth_y - 8, CX + 12, mouth_y + 2), 180, 360, fill=hair)
    if "moustache" in acc:
        d.chord(B(CX - 14, mouth_y - 9, CX + 14, mouth_y + 3), 180, 360, fill=hair)
    if "stubble" in acc:
        for k in range(24):
            a = math.radians(20 + k * 140 / 23)
            d.point((P(CX + 26 * math.cos(a)), P(CY + 10 + 28 * math.sin(a))), fill=shade(skin, 0.5))
    if "freckles" in acc:
        for x, y in ((-18, 12), (-14, 15), (-20, 16), (14, 12), (18, 15), (20, 11)):
            d.ellipse(B(CX + x - 1, CY + y - 1, CX + x + 1, CY + y + 1), fill=shade(skin, 0.7))
    if "scar" in acc:
        d.line(PTS((CX + 16, CY + 6), (CX + 24, CY + 24)), fill=mix(skin, (200, 120, 120), 0.6), width=P(2))
    if "glasses" in acc:
        for s in (-1, 1):
            x = CX + s * 14
            d.ellipse(B(x - 10, eye_y - 9, x + 10, eye_y + 9), outline=(60, 50, 40), width=P(2))
        d.line(PTS((CX - 4, eye_y - 2), (CX + 4, eye_y - 2)), fill=(60, 50, 40), width=P(2))
    if "monocle" in acc:
        d.ellipse(B(CX + 4, eye_y - 10, CX + 24, eye_y + 10), outline=(230, 200, 110), width=P(2))
    if "goggles" in acc:
        d.line(PTS((CX - RX, CY - 22), (CX + RX, CY - 22)), fill=(90, 60, 30), width=P(5))
        for s in (-1, 1):
            d.ellipse(B(CX + s * 14 - 10, CY - 32, CX + s * 14 + 10, CY - 12), fill=(190, 150, 60), outline=(90, 60, 30), width=P(2))
            d.ellipse(B(CX + s * 14 - 6, CY - 28, CX + s * 14 + 6, CY - 16), fill=(160, 210, 220))
    if "earrings" in acc:
        for s in (-1, 1):
            d.ellipse(B(CX + s * RX - 3, CY + 14, CX + s * RX + 3, CY + 20), fill=(230, 190, 80))
    if "hairpin" in acc:
        d.line(PTS((CX + 8, CY - RY - 8), (CX + 28, CY - RY + 6)), fill=(150, 100, 50), width=P(3))
    if "pipe" in acc:
        d.line(PTS((CX + 6, mouth_y + 2), (CX + 26, mouth_y + 10)), fill=(90, 60, 36), width=P(3))
        d.rounded_rectangle(B(CX + 24, mouth_y - 2, CX + 32, mouth_y + 12), radius=P(2), fill=(200, 170, 100))


def outfit(d, look):
    colour = CLOTH.get(look.get("outfit_colour"), CLOTH["grey"])
    dark, light = shade(colour, 0.7), mix(colour, (255, 255, 255), 0.3)
    kind = look.get("outfit", "tunic")
    top = 154
    d.rounded_rectangle(B(CX - 88, top, CX + 88, 280), radius=P(40), fill=colour)
    skin = SKIN.get(look["skin"], SKIN["fair"])
    if look.get("face") != "robot" and kind not in ("hoodie", "armour", "uniform"):
        d.polygon(PTS((CX - 18, top - 2), (CX + 18, top - 2), (CX, top + 24)), fill=shade(skin, 0.82))  # open neck
    if kind in ("coat", "suit", "labcoat", "jacket", "uniform"):
        d.polygon(PTS((CX - 20, top - 2), (CX + 20, top - 2), (CX, top + 50)), fill=(236, 232, 224) if kind != "jacket" else light)
        if kind == "suit":
            d.polygon(PTS((CX - 4, top + 6), (CX + 4, top + 6), (CX + 6, top + 44), (CX, top + 52), (CX - 6, top + 44)), fill=(140, 30, 40))
        for s in (-1, 1):
            d.polygon(PTS((CX + s * 60, top + 4), (CX + s * 20, top - 2), (CX, top + 56), (CX + s * 14, top + 70)), fill=dark)
        if kind == "uniform":
            for y in (top + 30, top + 46, top + 62):
                d.ellipse(B(CX - 3, y - 3, CX + 3, y + 3), fill=(220, 180, 70))
            for s in (-1, 1):
                d.rectangle(B(CX + s * 70 - 14, top + 4, CX + s * 70 + 14, top + 10), fill=(220, 180, 70))
    elif kind in ("robe", "tunic", "dress", "cloak", "shawl", "sweater", "tshirt", "shirt"):
        d.arc(B(CX - 24, top - 14, CX + 24, top + 30), 20, 160, fill=dark, width=P(3))
        if kind == "cloak":
            d.ellipse(B(CX - 7, top + 14, CX + 7, top + 28), fill=(210, 180, 90))
        if kind == "shawl":
            d.polygon(PTS((CX - 80, top + 6), (CX + 80, top + 6), (CX, top + 70)), fill=dark)
        if kind == "sweater":
            for x in range(int(CX - 80), int(CX + 80), 8):
                d.line(PTS((x, top + 40), (x, top + 70)), fill=dark, width=P(1))
        if kind == "shirt":
            for s in (-1, 1):
                d.polygon(PTS((CX, top + 18), (CX + s * 22, top - 2), (CX + s * 26, top + 14)), fill=light)
    elif kind == "hoodie":
        d.chord(B(CX - 40, top - 20, CX + 40, top + 30), 0, 180, fill=dark)
        d.line(PTS((CX - 8, top + 16), (CX - 8, top + 50)), fill=(236, 236, 240), width=P(2))
        d.line(PTS((CX + 8, top + 16), (CX + 8, top + 50)), fill=(236, 236, 240), width=P(2))
    elif kind == "armour":
        for y in (top + 16, top + 36, top + 56):
            d.arc(B(CX - 70, y - 20, CX + 70, y + 20), 20, 160, fill=light, width=P(3))
        for s in (-1, 1):
            d.ellipse(B(CX + s * 66 - 20, top - 4, CX + s * 66 + 20, top + 26), fill=light)
    elif kind in ("apron", "overalls"):
        under = (236, 230, 220) if kind == "overalls" else shade(colour, 0.85)
        d.rounded_rectangle(B(CX - 88, top, CX + 88, 280), radius=P(40), fill=under if kind == "overalls" else colour)
        bib = colour if kind == "overalls" else (240, 236, 226)
        d.rectangle(B(CX - 34, top + 24, CX + 34, 224), fill=bib)
        for s in (-1, 1):
            d.line(PTS((CX + s * 30, top + 26), (CX + s * 46, top)), fill=bib, width=P(6))
        if kind == "overalls":
            for s in (-1, 1):
                d.ellipse(B(CX + s * 28 - 3, top + 27, CX + s * 28 + 3, top + 33), fill=(220, 190, 90))
    acc = look.get("accessories", [])
    if "necklace" in acc:
        d.arc(B(CX - 20, top - 12, CX + 20, top + 22), 20, 160, fill=(236, 230, 214), width=P(3))
    if "bandana" in acc:
        d.polygon(PTS((CX - 22, top - 4), (CX + 22, top - 4), (CX, top + 24)), fill=(200, 40, 40))
    if "cravat" in acc:
        d.polygon(PTS((CX - 8, top), (CX + 8, top), (CX + 4, top + 24), (CX - 4, top + 24)), fill=(140, 20, 30))
    if "star_badge" in acc:
        d.regular_polygon((P(CX - 44), P(top + 34), P(9)), 5, fill=(220, 210, 170), rotation=0)
        d.regular_polygon((P(CX - 44), P(top + 34), P(5)), 5, fill=(190, 180, 140), rotation=36)


def hat(d, look):
    kind = look.get("hat", "none")
    colour = CLOTH.get(look.get("hat_colour"), CLOTH["black"]) if kind not in ("laurel",) else (80, 150, 70)
    dark, light = shade(colour, 0.7), mix(colour, (255, 255, 255), 0.3)
    top = CY - RY
    if kind in ("none", None):
        return
    if kind == "tricorn":
        d.chord(B(CX - 30, top - 20, CX + 30, top + 24), 180, 360, fill=colour)
        d.polygon(PTS((CX - 58, top - 6), (CX, top + 14), (CX + 58, top - 6), (CX + 40, top + 12), (CX, top + 22), (CX - 40, top + 12)), fill=dark)
        d.line(PTS((CX - 58, top - 6), (CX, top + 14), (CX + 58, top - 6)), fill=(210, 170, 80), width=P(2))
    elif kind == "top":
        d.rectangle(B(CX - 26, top - 44, CX + 26, top + 8), fill=colour)
        d.rectangle(B(CX - 26, top - 4, CX + 26, top + 4), fill=(120, 30, 40))
        d.ellipse(B(CX - 44, top + 2, CX + 44, top + 14), fill=dark)
    elif kind in ("bowler", "cloche"):
        d.chord(B(CX - 34, top - 22, CX + 34, top + 28), 180, 360, fill=colour)
        d.ellipse(B(CX - 44 if kind == "bowler" else CX - 36, top + 2, CX + 44 if kind == "bowler" else CX + 36, top + 12), fill=dark)
        if kind == "cloche":
            d.rectangle(B(CX - 34, top - 2, CX + 34, top + 4), fill=light)
    elif kind == "fedora":
        d.polygon(PTS((CX - 30, top + 6), (CX - 24, top - 22), (CX, top - 16), (CX + 24, top - 22), (CX + 30, top + 6)), fill=colour)
        d.rectangle(B(CX - 30, top - 2, CX + 30, top + 5), fill=shade(colour, 0.45))
        d.ellipse(B(CX - 52, top + 2, CX + 52, top + 14), fill=dark)
    elif kind == "cowboy":
        d.polygon(PTS((CX - 28, top + 8), (CX - 24, top - 22), (CX, top - 14), (CX + 24, top - 22), (CX + 28, top + 8)), fill=colour)
        d.chord(B(CX - 64, top - 14, CX + 64, top + 20), 0, 180, fill=dark)
        d.arc(B(CX - 64, top - 22, CX + 64, top + 16), 0, 180, fill=colour, width=P(4))
    elif kind == "straw":
        d.chord(B(CX - 30, top - 16, CX + 30, top + 24), 180, 360, fill=colour)
        d.ellipse(B(CX - 58, top + 2, CX + 58, top + 16), fill=shade(colour, 0.85))
        d.rectangle(B(CX - 30, top - 2, CX + 30, top + 3), fill=(150, 40, 40))
    elif kind == "souwester":
        d.chord(B(CX - 36, top - 18, CX + 36, top + 30), 180, 360, fill=colour)
        d.chord(B(CX - 52, top - 2, CX + 52, top + 30), 0, 180, fill=dark)
    elif kind in ("cap", "beanie", "beret"):
        if kind == "beanie":
            d.chord(B(CX - 36, top - 18, CX + 36, top + 36), 180, 360, fill=colour)
            d.rectangle(B(CX - 36, top + 4, CX + 36, top + 14), fill=dark)
        elif kind == "beret":
            d.ellipse(B(CX - 44, top - 16, CX + 30, top + 12), fill=colour)
        else:
            d.chord(B(CX - 36, top - 14, CX + 36, top + 26), 180, 360, fill=colour)
            d.chord(B(CX - 36, top + 2, CX + 20, top + 18), 0, 180, fill=dark)
    elif kind == "helmet":
        d.ellipse(B(CX - 50, CY - 56, CX + 50, CY + 50), outline=(220, 236, 250), width=P(3))
        d.arc(B(CX - 40, CY - 46, CX + 10, CY), 190, 260, fill=(255, 255, 255), width=P(3))
    elif kind == "crown":
        d.polygon(PTS((CX - 28, top + 6), (CX - 28, top - 18), (CX - 14, top - 6), (CX, top - 22), (CX + 14, top - 6), (CX + 28, top - 18), (CX + 28, top + 6)), fill=(230, 190, 60))
    elif kind == "circlet":
        d.arc(B(CX - RX - 1, top + 4, CX + RX + 1, top + 30), 180, 360, fill=colour, width=P(3))
        d.ellipse(B(CX - 4, top + 6, CX + 4, top + 14), fill=(200, 230, 250))
    elif kind == "laurel":
        for s in (-1, 1):
            for k in range(5):
                a = math.radians(200 + k * 16) if s < 0 else math.radians(340 - k * 16)
                x, y = CX + 34 * math.cos(a), top + 22 + 30 * math.sin(a)
                d.ellipse(B(x - 5, y - 3, x + 5, y + 3), fill=colour)
    elif kind in ("hood",):
        d.chord(B(CX - RX - 12, top - 10, CX + RX + 12, CY + 60), 180, 360, fill=colour)
        for s in (-1, 1):
            d.polygon(PTS((CX + s * (RX + 12), CY + 8), (CX + s * (RX + 2), CY - 10), (CX + s * (RX - 2), CY + 40), (CX + s * (RX + 18), CY + 60)), fill=colour)
        d.arc(B(CX - RX - 4, top - 4, CX + RX + 4, CY + 40), 190, 350, fill=dark, width=P(3))
    elif kind in ("headscarf", "bonnet"):
        d.chord(B(CX - RX - 6, top - 8, CX + RX + 6, CY + 14), 180, 360, fill=colour)
        if kind == "bonnet":
            d.arc(B(CX - RX - 10, top - 12, CX + RX + 10, CY + 18), 180, 360, fill=light, width=P(4))
            d.line(PTS((CX - RX, CY + 10), (CX - 10, CY + 40)), fill=light, width=P(2))
        else:
            d.polygon(PTS((CX + RX - 2, top + 14), (CX + RX + 14, top + 4), (CX + RX + 10, top + 22)), fill=dark)
    elif kind == "headband":
        d.arc(B(CX - RX - 1, top + 2, CX + RX + 1, top + 34), 180, 360, fill=colour, width=P(4))
        d.polygon(PTS((CX + 18, top + 8), (CX + 30, top - 26), (CX + 24, top + 8)), fill=(240, 240, 250))
    elif kind == "turban":
        d.ellipse(B(CX - 38, top - 22, CX + 38, top + 22), fill=colour)
        d.arc(B(CX - 30, top - 16, CX + 30, top + 14), 180, 330, fill=shade(colour, 0.85), width=P(3))
        d.ellipse(B(CX - 4, top - 2, CX + 4, top + 6), fill=(60, 140, 160))
    elif kind == "wizard":
        d.polygon(PTS((CX - 36, top + 10), (CX + 6, top - 66), (CX + 36, top + 10)), fill=colour)
        d.ellipse(B(CX - 50, top + 2, CX + 50, top + 16), fill=dark)
        for x, y in ((CX - 10, top - 10), (CX + 8, top - 30), (CX + 14, top - 2)):
            d.regular_polygon((P(x), P(y), P(4)), 5, fill=(250, 230, 120))
    elif kind == "antenna":
        d.line(PTS((CX, top + 6), (CX, top - 22)), fill=(150, 156, 166), width=P(3))
        d.ellipse(B(CX - 5, top - 28, CX + 5, top - 18), fill=(255, 70, 70))


def draw_portrait(look: dict, seed: int) -> Image.Image:
    """The portrait of `look` at 448x448 RGBA: background, hair, outfit, face, features, hat."""
    rng = random.Random(seed)
    img = Image.new("RGBA", (P(PORTRAIT_SIZE), P(PORTRAIT_SIZE)), (0, 0, 0, 255))
    BACKGROUNDS[look.get("background", "modern")](img, ImageDraw.Draw(img), rng)
    d = ImageDraw.Draw(img)
    hair = HAIR.get(look.get("hair"))
    style = look.get("hair_style", "short")
    hooded = look.get("hat") == "hood"
    if hooded:
        hat(d, {**look, "hat": "hood"})
    if hair and not hooded:
        hair_back(d, style, hair)
    outfit(d, look)
    face(d, look)
    if hair and look.get("face") != "robot":
        hair_front(d, style if not hooded else "short", hair)
    features(d, look)
    if not hooded:
        hat(d, look)
    return img


def portrait_seed(slug: str) -> int:
    """The seed of a portrait's random details (stars, windows): from the slug, so one portrait redraws alone."""
    return int(hashlib.sha256(slug.encode()).hexdigest()[:8], 16)


def save_portrait(img: Image.Image, path: Path):
    """224x224, Lanczos from the 448 drawing, 64 colours (median cut, no dither), optimised PNG."""
    small = img.convert("RGB").resize((PORTRAIT_SIZE, PORTRAIT_SIZE), Image.LANCZOS)
    small = small.quantize(colors=PORTRAIT_COLOURS, method=Image.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)
