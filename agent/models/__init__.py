"""Loaders for every heavy resource: `load_lm`, `load_whisper`, `load_clip`, each returning frozen eval-mode modules."""
