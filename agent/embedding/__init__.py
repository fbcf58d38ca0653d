"""The multimodal persona embedding: portrait, voice sample and card -> K soft-prompt vectors for the LM.

Data flows one way through one file per stage: `encoders` (frozen CLIP / Whisper / LM -> modality tokens),
`cache` (those tokens on disk, keyed by content and encoder), `fusion` (modality tokens -> K vectors of
the LM's width) and `soft_prompt` (the K vectors spliced into the LM's `inputs_embeds`).
"""
