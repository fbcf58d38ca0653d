"""Portrait backgrounds by era and setting, drawn with Pillow; BACKGROUNDS maps each name to its drawing function."""
from __future__ import annotations

import math
import random

from PIL import ImageDraw

from .canvas import B, P, PTS, glow_layer, gradient, stars

def bg_ancient(img, d, rng):
    gradient(img, (250, 214, 150), (232, 160, 96))
    for x in (8, 186):
        d.rectangle(B(x, 40, x + 30, 224), fill=(238, 226, 200))
        for gx in range(x + 5, x + 30, 7):
            d.line(PTS((gx, 46), (gx, 224)), fill=(214, 200, 170), width=P(1.5))
        d.rectangle(B(x - 4, 30, x + 34, 42), fill=(226, 212, 184))
    d.polygon(PTS((0, 30), (112, 4), (224, 30)), fill=(226, 212, 184))


def bg_egypt(img, d, rng):
    gradient(img, (250, 200, 110), (240, 150, 70), 0, 170)
    d.ellipse(B(150, 18, 196, 64), fill=(255, 236, 170))
    d.polygon(PTS((0, 170), (60, 90), (130, 170)), fill=(214, 170, 100))
    d.polygon(PTS((60, 90), (130, 170), (96, 170)), fill=(186, 140, 80))
    d.rectangle(B(0, 170, 224, 224), fill=(226, 186, 120))


def bg_medieval(img, d, rng):
    gradient(img, (120, 116, 110), (84, 80, 78))
    for row, y in enumerate(range(0, 224, 18)):
        d.line(PTS((0, y), (224, y)), fill=(96, 92, 88), width=P(1.5))
        for x in range(-20 + (row % 2) * 16, 224, 32):
            d.line(PTS((x, y), (x, y + 18)), fill=(96, 92, 88), width=P(1.5))
    d.rounded_rectangle(B(150, 24, 206, 130), radius=P(28), fill=(40, 56, 96))
    d.line(PTS((178, 24), (178, 130)), fill=(90, 80, 70), width=P(3))
    d.line(PTS((150, 80), (206, 80)), fill=(90, 80, 70), width=P(3))


def bg_norse(img, d, rng):
    gradient(img, (20, 30, 60), (60, 80, 110))
    for k, col in enumerate([(80, 220, 160), (100, 200, 220)]):
        d.line([(P(x), P(40 + k * 16 + 10 * math.sin(x / 20 + k))) for x in range(0, 225, 4)], fill=col, width=P(5))
    d.polygon(PTS((0, 190), (50, 120), (100, 190)), fill=(200, 210, 226))
    d.polygon(PTS((80, 190), (160, 100), (240, 190)), fill=(170, 186, 206))
    d.rectangle(B(0, 186, 224, 224), fill=(220, 228, 236))


def bg_fantasy(img, d, rng):
    gradient(img, (40, 60, 100), (90, 130, 110))
    d.ellipse(B(160, 16, 200, 56), fill=(250, 246, 210))
    for x in range(-10, 240, 26):
        h = 60 + rng.uniform(0, 40)
        d.polygon(PTS((x, 224), (x + 16, 224 - h - 60), (x + 32, 224)), fill=(24, 60, 44))


def bg_wizard(img, d, rng):
    gradient(img, (36, 20, 70), (90, 50, 130))
    stars(d, rng, 50)
    d.ellipse(B(20, 18, 60, 58), fill=(250, 240, 200))
    d.ellipse(B(32, 12, 70, 52), fill=(40, 24, 78))


def bg_forge(img, d, rng):
    gradient(img, (40, 26, 20), (16, 10, 8))

    def fire(layer):
        layer.ellipse(B(20, 150, 204, 260), fill=(255, 130, 30, 200))
    glow_layer(img, fire, 20)
    d = ImageDraw.Draw(img)
    for i in range(14):
        x, y = rng.uniform(10, 214), rng.uniform(20, 150)
        d.ellipse(B(x, y, x + 2, y + 2), fill=(255, 200, 80))


def bg_cottage(img, d, rng):
    gradient(img, (120, 84, 54), (80, 54, 34))
    for x in range(0, 224, 28):
        d.line(PTS((x, 0), (x, 224)), fill=(96, 66, 40), width=P(3))
    d.rectangle(B(150, 30, 206, 96), fill=(170, 210, 230))
    d.line(PTS((178, 30), (178, 96)), fill=(80, 54, 34), width=P(3))
    d.line(PTS((150, 63), (206, 63)), fill=(80, 54, 34), width=P(3))
    for x in range(14, 60, 12):
        d.rectangle(B(x, 40, x + 8, 60), fill=(rng.randrange(80, 200), rng.randrange(80, 160), 60))


def bg_sea(img, d, rng):
    gradient(img, (120, 180, 230), (200, 226, 240), 0, 130)
    gradient(img, (40, 100, 150), (20, 50, 90), 130, 224)
    d = ImageDraw.Draw(img)
    for y in range(140, 224, 12):
        x = rng.uniform(0, 200)
        d.line(PTS((x, y), (x + 20, y)), fill=(150, 200, 230), width=P(1.5))
    d.ellipse(B(30, 20, 70, 40), fill=(250, 250, 250))


def bg_sea_night(img, d, rng):
    gradient(img, (10, 16, 40), (30, 40, 80), 0, 140)
    stars(d, rng, 45, 130)
    gradient(img, (20, 40, 70), (8, 16, 30), 140, 224)
    d = ImageDraw.Draw(img)
    for y in range(148, 224, 12):
        x = rng.uniform(0, 200)
        d.line(PTS((x, y), (x + 18, y)), fill=(80, 110, 150), width=P(1.2))


def bg_lighthouse(img, d, rng):
    bg_sea_night(img, d, rng)
    d = ImageDraw.Draw(img)
    d.polygon(PTS((180, 140), (188, 60), (204, 60), (212, 140)), fill=(220, 220, 214))
    d.rectangle(B(186, 46, 206, 60), fill=(255, 240, 160))
    d.polygon(PTS((196, 52), (0, 20), (0, 60)), fill=(70, 80, 110))


def bg_night(img, d, rng):
    gradient(img, (14, 20, 60), (40, 50, 110))
    stars(d, rng, 55, 150)
    d.ellipse(B(160, 20, 196, 56), fill=(250, 240, 190))
    d.ellipse(B(170, 14, 204, 50), fill=(16, 22, 62))
    d.chord(B(0, 150, 80, 230), 180, 360, fill=(24, 22, 44))
    d.rectangle(B(36, 110, 44, 160), fill=(24, 22, 44))
    d.rectangle(B(150, 170, 224, 224), fill=(24, 22, 44))


def bg_blossom(img, d, rng):
    gradient(img, (250, 226, 226), (240, 200, 206))
    d.ellipse(B(150, 20, 200, 70), fill=(230, 80, 70))
    d.line(PTS((0, 40), (60, 60), (110, 40)), fill=(90, 60, 50), width=P(4), joint="curve")
    d.line(PTS((40, 54), (70, 90)), fill=(90, 60, 50), width=P(3))
    for _ in range(26):
        x, y = rng.uniform(0, 120), rng.uniform(26, 100)
        d.ellipse(B(x - 4, y - 4, x + 4, y + 4), fill=(250, 170, 200))


def bg_victorian(img, d, rng):
    gradient(img, (56, 82, 62), (34, 52, 40))
    for x in range(0, 224, 16):
        d.line(PTS((x, 0), (x, 224)), fill=(66, 94, 72), width=P(4))
    d.rectangle(B(160, 24, 210, 80), fill=(130, 96, 50))
    d.rectangle(B(165, 29, 205, 75), fill=(150, 170, 190))


def bg_parlour(img, d, rng):
    gradient(img, (236, 200, 200), (210, 170, 176))
    for x in range(0, 224, 16):
        d.line(PTS((x, 0), (x, 224)), fill=(226, 186, 190), width=P(5))
    for i, x in enumerate(range(12, 60, 14)):
        d.rounded_rectangle(B(x, 60 - i * 4, x + 10, 90), radius=P(3), fill=[(150, 200, 190), (220, 160, 200), (230, 200, 120), (170, 160, 230)][i % 4])


def bg_steampunk(img, d, rng):
    gradient(img, (120, 86, 46), (70, 50, 30))
    for cx, cy, r in ((36, 40, 30), (196, 60, 24), (20, 150, 20), (206, 170, 30)):
        d.ellipse(B(cx - r, cy - r, cx + r, cy + r), outline=(196, 150, 70), width=P(4))
        for k in range(8):
            a = k * math.pi / 4
            d.line(PTS((cx + r * math.cos(a), cy + r * math.sin(a)), (cx + (r + 6) * math.cos(a), cy + (r + 6) * math.sin(a))),
                   fill=(196, 150, 70), width=P(4))
        d.ellipse(B(cx - 5, cy - 5, cx + 5, cy + 5), fill=(196, 150, 70))


def bg_horror(img, d, rng):
    gradient(img, (30, 20, 44), (60, 40, 70))
    d.ellipse(B(140, 14, 200, 74), fill=(230, 226, 200))
    d.line(PTS((10, 224), (24, 120), (10, 70)), fill=(16, 10, 20), width=P(6))
    d.line(PTS((22, 140), (56, 100), (70, 96)), fill=(16, 10, 20), width=P(3))
    d.line(PTS((18, 100), (40, 70), (36, 50)), fill=(16, 10, 20), width=P(3))
    for _ in range(4):
        x, y = rng.uniform(60, 120), rng.uniform(20, 60)
        d.line(PTS((x - 5, y), (x, y + 3), (x + 5, y)), fill=(16, 10, 20), width=P(1.5))


def bg_western(img, d, rng):
    gradient(img, (250, 170, 90), (252, 220, 150), 0, 150)
    d.ellipse(B(30, 30, 70, 70), fill=(255, 240, 180))
    d.polygon(PTS((120, 150), (136, 96), (200, 96), (214, 150)), fill=(176, 86, 56))
    d.polygon(PTS((0, 150), (10, 118), (50, 118), (62, 150)), fill=(190, 100, 64))
    d.rectangle(B(0, 150, 224, 224), fill=(214, 170, 110))


def bg_canyon(img, d, rng):
    gradient(img, (120, 170, 220), (230, 200, 160), 0, 120)
    d.polygon(PTS((0, 224), (0, 60), (50, 70), (70, 224)), fill=(170, 80, 50))
    d.polygon(PTS((224, 224), (224, 50), (170, 64), (150, 224)), fill=(150, 70, 44))
    d.rectangle(B(0, 190, 224, 224), fill=(200, 150, 100))


def bg_hills(img, d, rng):
    gradient(img, (250, 180, 120), (170, 150, 190), 0, 150)
    d.ellipse(B(-60, 110, 140, 260), fill=(60, 110, 60))
    d.ellipse(B(80, 120, 300, 280), fill=(40, 90, 50))
    d.rectangle(B(170, 110, 200, 140), fill=(100, 70, 50))
    d.polygon(PTS((164, 112), (185, 96), (206, 112)), fill=(80, 50, 40))


def bg_noir(img, d, rng):
    gradient(img, (40, 40, 46), (20, 20, 24))
    for y in range(10, 224, 22):
        d.polygon(PTS((0, y), (224, y - 40), (224, y - 30), (0, y + 10)), fill=(70, 70, 76))
    for i in range(40):
        x, y = rng.uniform(0, 224), rng.uniform(0, 224)
        d.line(PTS((x, y), (x - 3, y + 12)), fill=(90, 90, 110), width=P(0.8))


def bg_jazz(img, d, rng):
    gradient(img, (110, 20, 30), (50, 10, 20))
    for k in range(12):
        a = math.pi + k * math.pi / 11
        d.line(PTS((112, 230), (112 + 200 * math.cos(a), 230 + 200 * math.sin(a))), fill=(200, 160, 70), width=P(2))
    d.arc(B(40, 150, 184, 310), 180, 360, fill=(220, 180, 80), width=P(3))


def bg_industrial(img, d, rng):
    gradient(img, (110, 116, 100), (70, 74, 64))
    for x in (0, 112):
        d.line(PTS((x, 0), (x + 112, 112)), fill=(60, 60, 56), width=P(4))
        d.line(PTS((x + 112, 0), (x, 112)), fill=(60, 60, 56), width=P(4))
    d.line(PTS((0, 112), (224, 112)), fill=(60, 60, 56), width=P(6))
    d.line(PTS((0, 2), (224, 2)), fill=(60, 60, 56), width=P(6))


def bg_midcentury(img, d, rng):
    gradient(img, (120, 200, 196), (90, 170, 170), 0, 160)
    for i, x in enumerate(range(0, 224, 16)):
        for j, y in enumerate(range(160, 224, 16)):
            d.rectangle(B(x, y, x + 16, y + 16), fill=(240, 240, 236) if (i + j) % 2 else (30, 30, 34))
    d.rectangle(B(0, 150, 224, 160), fill=(200, 40, 50))


def bg_modern(img, d, rng):
    gradient(img, (216, 222, 230), (180, 190, 204))
    d.rectangle(B(136, 20, 210, 120), fill=(150, 190, 230))
    for x, h in ((140, 50), (156, 70), (176, 40), (192, 60)):
        d.rectangle(B(x, 120 - h, x + 14, 120), fill=(90, 110, 140))
    d.rectangle(B(136, 20, 210, 120), outline=(240, 240, 244), width=P(4))


def bg_cafe(img, d, rng):
    gradient(img, (190, 140, 100), (140, 96, 66))
    d.rectangle(B(0, 70, 224, 76), fill=(100, 66, 44))
    for x in range(10, 224, 22):
        d.rounded_rectangle(B(x, 54, x + 14, 70), radius=P(3), fill=[(240, 240, 236), (200, 90, 60), (90, 140, 190)][x % 3])
    d.ellipse(B(150, 10, 200, 40), fill=(60, 140, 70))


def bg_suburb(img, d, rng):
    gradient(img, (140, 200, 250), (210, 236, 250), 0, 170)
    d.rectangle(B(150, 100, 214, 170), fill=(230, 200, 160))
    d.polygon(PTS((142, 102), (182, 70), (222, 102)), fill=(170, 70, 60))
    d.rectangle(B(174, 136, 190, 170), fill=(90, 60, 40))
    d.rectangle(B(0, 170, 224, 224), fill=(100, 180, 80))
    d.line(PTS((30, 170), (30, 60)), fill=(90, 90, 96), width=P(3))


def bg_studio(img, d, rng):
    gradient(img, (40, 34, 44), (24, 20, 28))
    for x in range(0, 224, 20):
        for y in range(0, 224, 20):
            d.rectangle(B(x + 2, y + 2, x + 18, y + 18), fill=(50, 44, 56))

    def light(layer):
        layer.rounded_rectangle(B(146, 16, 214, 40), radius=P(4), fill=(230, 40, 40, 255))
    glow_layer(img, light, 5)
    d = ImageDraw.Draw(img)
    d.text((P(180), P(28)), "ON AIR", fill=(255, 230, 230), anchor="mm", font_size=P(11))


def bg_beach(img, d, rng):
    gradient(img, (90, 170, 240), (190, 226, 250), 0, 150)
    d.rectangle(B(0, 140, 224, 170), fill=(40, 130, 190))
    d.rectangle(B(0, 170, 224, 224), fill=(240, 214, 160))
    d.ellipse(B(170, 18, 206, 54), fill=(255, 240, 150))
    d.line(PTS((30, 170), (36, 80)), fill=(120, 80, 40), width=P(5))
    for a in (200, 240, 290, 330):
        r = math.radians(a)
        d.line(PTS((36, 80), (36 + 30 * math.cos(r), 86 + 16 * math.sin(r) + 14)), fill=(40, 140, 60), width=P(5))


def bg_cyber(img, d, rng):
    gradient(img, (12, 8, 34), (80, 24, 88))
    for x0, top, w in ((0, 70, 40), (48, 110, 30), (150, 60, 36), (192, 100, 40)):
        d.rectangle(B(x0, top, x0 + w, 224), fill=(20, 16, 44))
        for wy in range(int(top) + 8, 224, 12):
            for wx in range(x0 + 5, x0 + w - 5, 9):
                if rng.random() < 0.3:
                    d.rectangle(B(wx, wy, wx + 4, wy + 5), fill=rng.choice([(255, 206, 120), (110, 230, 255), (255, 90, 190)]))

    def neon(layer):
        layer.line(PTS((10, 50), (60, 50)), fill=(255, 60, 170, 255), width=P(3))
        layer.ellipse(B(170, 20, 200, 50), outline=(60, 240, 255, 255), width=P(3))
    glow_layer(img, neon, 4)


def bg_space(img, d, rng):
    gradient(img, (4, 6, 20), (20, 16, 50))
    stars(d, rng, 70)
    d.ellipse(B(150, 20, 210, 80), fill=(200, 120, 80))
    d.arc(B(132, 40, 228, 60), 0, 360, fill=(230, 200, 160), width=P(2))


def bg_spaceship(img, d, rng):
    gradient(img, (70, 78, 90), (40, 44, 54))
    for y in range(0, 224, 40):
        d.line(PTS((0, y), (224, y)), fill=(90, 98, 110), width=P(2))
    for x in range(0, 224, 56):
        d.line(PTS((x, 0), (x, 224)), fill=(90, 98, 110), width=P(2))
    d.ellipse(B(160, 20, 210, 70), fill=(10, 12, 30))
    stars(ImageDraw.Draw(img), random.Random(3), 6, 60)
    d.ellipse(B(160, 20, 210, 70), outline=(140, 150, 160), width=P(4))
    for x in (20, 40):
        d.ellipse(B(x, 30, x + 8, 38), fill=(80, 240, 120))


def bg_mars(img, d, rng):
    gradient(img, (240, 180, 150), (220, 140, 110), 0, 150)
    d.rectangle(B(0, 150, 224, 224), fill=(170, 80, 50))
    d.chord(B(130, 90, 220, 180), 180, 360, fill=(200, 230, 230))
    d.chord(B(130, 90, 220, 180), 180, 360, outline=(240, 250, 250), width=P(2))
    for x in range(10, 110, 20):
        d.polygon(PTS((x, 150), (x + 8, 120), (x + 16, 150)), fill=(60, 120, 70))


def bg_ice(img, d, rng):
    gradient(img, (220, 236, 248), (170, 200, 226))
    for _ in range(6):
        x, y = rng.uniform(0, 224), rng.uniform(0, 224)
        d.line(PTS((x, y), (x + rng.uniform(-30, 30), y + 30), (x + rng.uniform(-30, 30), y + 60)), fill=(140, 180, 210), width=P(1.5))
    d.ellipse(B(170, 14, 214, 58), fill=(230, 190, 140))


BACKGROUNDS = {name[3:]: fn for name, fn in globals().items() if name.startswith("bg_")}
