"""Token generation on llama.cpp for many streams at once: one scheduler thread owns the context.

Decoders (agent/chat/llamacpp_decoding.py) hand it `Work` (a sequence, the ids it must hold, and a token
picker or none); each step it decodes one row per generating stream plus prefill chunks of waiting ones in
one `llama_decode` (batch.py), samples each stream at its own row, and spills idle sequences to RAM or disk
instead of evicting them (sequences.py, spill.py).
"""
