"""Loads an open_clip model with its own inference preprocessing, frozen and in eval mode, never downloading.

Hands the image encoder `(model, preprocess)`: `preprocess(PIL image) -> (3, H, W)` tensor and
`model.encode_image((B, 3, H, W)) -> (B, embed_dim)`. No CLIP weights install offline, so real weights come
from a local checkpoint file or open_clip's / Hugging Face's local cache; random weights are for tests.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Optional

import open_clip
import torch

from .packages import hub_offline, is_package_ref, resolve_package_ref, MissingWeights

log = logging.getLogger(__name__)

BASE_ARCHITECTURE = "ViT-B-32"  # the built-in config a tiny one overrides completely (open_clip needs a name)
HF_DEFAULT_WEIGHTS = "open_clip_pytorch_model.bin"  # open_clip's file name when an hf_hub entry names none
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")

# `random:<size>` -> an open_clip model config (embed_dim, vision_cfg, text_cfg) small enough for tests
TINY_MODELS = {
    "random:tiny": dict(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),  # 16 patches, 2 heads
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),  # open_clip's tokenizer
    ),
}


def _cached_tag_file(cfg: dict) -> tuple[Optional[str], str]:
    """(the locally cached weights file of an open_clip pretrained config or None, where it was looked for).

    Mirrors open_clip's choice: the Hugging Face hub entry when there is one, else its URL download folder.
    """
    if "file" in cfg:
        return (cfg["file"] if os.path.isfile(cfg["file"]) else None), cfg["file"]
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(cfg["hf_hub"])
        filename = filename or HF_DEFAULT_WEIGHTS
        stem = filename.rsplit(".", 1)[0]
        for candidate in (stem + ".safetensors", filename):
            found = try_to_load_from_cache(repo, candidate)
            if isinstance(found, str):
                return found, f"the Hugging Face cache ({repo}/{filename})"
        return None, f"the Hugging Face cache ({repo}/{filename})"
    target = Path("~/.cache/clip").expanduser() / os.path.basename(cfg.get("url", ""))
    return (str(target) if target.is_file() else None), str(target)


def _looks_like_path(ref: str) -> bool:
    return is_package_ref(ref) or os.sep in ref or ref.startswith(("~", ".")) or ref.endswith(CHECKPOINT_SUFFIXES)


def _resolve_pretrained(arch: str, label: str, pretrained: str) -> tuple[Optional[str], Optional[dict]]:
    """(what open_clip's `pretrained` gets, extra create_model options when it is a tag, else None).

    '' -> None (random weights); a checkpoint path -> that path; a pretrained tag -> the tag, once it is
    known to be cached, with the activation its weights were trained with.
    """
    if not pretrained:
        log.warning("CLIP %s has random weights (clip.pretrained is empty): image embeddings mean nothing", label)
        return None, None
    if _looks_like_path(pretrained) or os.path.exists(pretrained):
        path = resolve_package_ref(pretrained) if is_package_ref(pretrained) else Path(pretrained).expanduser()
        if not path.is_file():
            raise MissingWeights(f"CLIP checkpoint {path} does not exist; pass an open_clip checkpoint file")
        return str(path), None
    how = ("download it on a machine with internet (open_clip.create_model_and_transforms"
           f"('{arch}', pretrained='{pretrained}')) and set clip.pretrained to the checkpoint file")
    tags = open_clip.list_pretrained_tags_by_model(arch) if label == arch else []
    if pretrained not in tags:
        raise MissingWeights(f"CLIP pretrained {pretrained!r} for {label} is neither a file nor a known tag "
                             f"(tags: {', '.join(tags) or 'none'}); pass a local checkpoint file")
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    found, looked = _cached_tag_file(cfg)
    if found is None:
        raise MissingWeights(f"CLIP {arch} weights {pretrained!r} are not on this machine: looked in {looked}; {how}")
    # 'openai' weights were trained with QuickGELU; open_clip only warns when the architecture lacks it
    return pretrained, {"force_quick_gelu": bool(cfg.get("quick_gelu"))}


def load_clip(model: str, pretrained: str = "", *, device: str = "cpu") -> tuple[torch.nn.Module, Callable]:
    """(frozen eval-mode open_clip model, its inference preprocess).

    model: an open_clip architecture ("ViT-B-32", ...) or `random:tiny` (32x32 images, 32-d embeddings).
    pretrained: "" (random weights, tests only), a local checkpoint file, or an open_clip tag such as
    "openai" that is already in the local cache; anything that would need a download raises MissingWeights.
    """
    if model in TINY_MODELS:
        arch, overrides = BASE_ARCHITECTURE, TINY_MODELS[model]
    elif model in open_clip.list_models():
        arch, overrides = model, {}
    else:
        raise ValueError(f"{model!r} is not an open_clip architecture (see open_clip.list_models(), e.g. "
                         f"{BASE_ARCHITECTURE}) nor one of {', '.join(TINY_MODELS)}")
    weights, tag_options = _resolve_pretrained(arch, model, pretrained)
    try:
        with hub_offline():
            clip, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=weights, device=device, **overrides, **(tag_options or {}))
    except (RuntimeError, OSError) as e:
        if tag_options is None:
            raise  # random init or a local file: a broken or mismatched file says so itself
        raise MissingWeights(f"CLIP {model} weights {pretrained!r} could not be read from the local cache "
                             f"(downloads are off): {e}; pass a local checkpoint file instead") from e
    return clip.eval().requires_grad_(False), preprocess
