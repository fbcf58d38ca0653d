"""The portrait canvas: size, drawing scale, palettes and the colour and coordinate helpers every drawing uses."""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFilter

PORTRAIT_SIZE = 224
SCALE = 2  # drawn at 448 and shrunk: anti-aliasing
PORTRAIT_COLOURS = 64

def P(v: float) -> int:
    return round(v * SCALE)


def B(x0, y0, x1, y1):
    return [P(x0), P(y0), P(x1), P(y1)]


def PTS(*xy):
    return [(P(x), P(y)) for x, y in xy]


SKIN = {"pale": (242, 214, 196), "fair": (234, 192, 160), "ruddy": (226, 168, 140), "tan": (210, 160, 118),
        "olive": (190, 146, 104), "brown": (156, 106, 72), "dark": (116, 76, 50), "deep": (82, 52, 36),
        "ghost": (190, 208, 216), "brass": (196, 160, 80), "metal": (168, 176, 188), "orange_metal": (224, 122, 44),
        "copper": (184, 110, 64)}
HAIR = {"black": (28, 24, 24), "dark brown": (62, 40, 28), "brown": (100, 66, 40), "chestnut": (122, 62, 36),
        "auburn": (140, 52, 30), "red": (176, 60, 30), "ginger": (206, 104, 40), "copper": (184, 96, 48),
        "blonde": (226, 190, 110), "sandy": (200, 168, 110), "platinum": (236, 230, 210), "grey": (150, 150, 150),
        "dark grey": (96, 92, 90), "white": (236, 236, 232), "silver": (200, 204, 210), "teal": (40, 200, 190),
        "pink": (236, 110, 170), "violet": (140, 90, 200), "blue": (60, 110, 220), "green": (70, 170, 90)}
CLOTH = {"saffron": (230, 160, 40), "white": (236, 232, 224), "black": (34, 32, 38), "blue": (54, 90, 170),
         "navy": (30, 40, 80), "teal": (30, 130, 130), "green": (50, 120, 60), "forest": (34, 80, 44),
         "emerald": (20, 120, 80), "brown": (110, 72, 44), "tan": (190, 150, 100), "grey": (120, 120, 126),
         "charcoal": (60, 60, 66), "crimson": (160, 30, 40), "red": (200, 40, 40), "burgundy": (110, 30, 46),
         "plum": (110, 50, 100), "purple": (100, 50, 150), "lavender": (170, 150, 210), "indigo": (50, 50, 120),
         "cream": (236, 222, 190), "rust": (170, 80, 40), "mustard": (200, 160, 40), "orange": (230, 120, 30),
         "pink": (236, 160, 190), "mint": (160, 220, 190), "silver": (190, 194, 200), "magenta": (200, 40, 140),
         "denim": (70, 100, 150), "yellow": (230, 200, 40), "copper": (184, 110, 64), "brass": (196, 160, 80),
         "straw": (222, 196, 120)}
EYES = {"brown": (110, 70, 40), "dark brown": (60, 38, 24), "hazel": (140, 110, 60), "green": (70, 130, 80),
        "grey": (120, 130, 140), "blue": (70, 120, 190), "pale blue": (150, 190, 230), "amber": (240, 170, 40),
        "red": (190, 30, 40)}


def shade(c, f=0.75):
    return tuple(max(0, min(255, round(v * f))) for v in c[:3])


def mix(a, b, t):
    return tuple(round(a[i] + (b[i] - a[i]) * t) for i in range(3))


def gradient(img, top, bottom, y0=0, y1=PORTRAIT_SIZE):
    d = ImageDraw.Draw(img)
    a, b = P(y0), P(y1)
    for y in range(a, b):
        d.line([(0, y), (img.width, y)], fill=mix(top, bottom, (y - a) / max(1, b - a - 1)))


def stars(d, rng, n=40, y1=224, colour=(240, 240, 255)):
    for _ in range(n):
        x, y, r = rng.uniform(0, 224), rng.uniform(0, y1), rng.choice([0.6, 0.8, 1.2])
        d.ellipse(B(x - r, y - r, x + r, y + r), fill=colour)


def glow_layer(img, draw_fn, radius):
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw_fn(ImageDraw.Draw(layer))
    img.alpha_composite(layer.filter(ImageFilter.GaussianBlur(P(radius))))
    img.alpha_composite(layer)
