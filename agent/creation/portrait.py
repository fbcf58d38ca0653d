"""What a portrait shows, by CLIP zero-shot: the age, era and mood a created persona's writing starts from.

`portrait_attributes(clip, image_path, model_name)` compares the image with short text prompts per attribute
and hands `prompts.request` the best phrase of each ("an old person", "the 1800s", "a gloomy mood").
Only where CLIP weights exist (`clip.enabled`); no image model is invented or downloaded.
"""
from __future__ import annotations

from pathlib import Path

ATTRIBUTES = {  # attribute -> the phrases compared with the image, as "a portrait of <phrase>"
    "age": ("a child", "a young adult", "a middle-aged person", "an old person"),
    "era": ("ancient times", "the middle ages", "the 1700s", "the 1800s", "the early 1900s", "the present day",
            "a science-fiction future", "a fantasy world"),
    "mood": ("a cheerful mood", "a gloomy mood", "a fierce mood", "a calm mood", "a nervous mood"),
}


def portrait_attributes(clip, image_path: str | Path, model_name: str) -> list[str]:
    """clip: (model, preprocess) from models.clip.load_clip -> one phrase per attribute, best match first."""
    import open_clip
    import torch
    from PIL import Image

    model, preprocess = clip
    tokenizer = open_clip.get_tokenizer(model_name if not model_name.startswith("random:") else "ViT-B-32")
    with Image.open(image_path) as img:
        pixels = preprocess(img.convert("RGB"))[None]  # (1, 3, H, W)
    found = []
    with torch.inference_mode():
        image = torch.nn.functional.normalize(model.encode_image(pixels).float(), dim=-1)  # (1, D)
        for phrases in ATTRIBUTES.values():
            texts = tokenizer([f"a portrait of {p}" for p in phrases])
            text = torch.nn.functional.normalize(model.encode_text(texts).float(), dim=-1)  # (n, D)
            found.append(phrases[int((image @ text.T).argmax())])
    return found
