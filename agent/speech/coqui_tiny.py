"""A tiny randomly initialised Coqui VITS, built from its config in code.

No Coqui weights install offline, so tests and the voice benchmark drive the real `coqui` engine path
through a local model folder made here. It speaks gibberish.
"""
from __future__ import annotations

from pathlib import Path


def save_tiny_vits(folder: Path, sample_rate: int = 16000) -> None:
    """A ~250k-parameter random VITS on plain characters (no espeak): config.json + model.pth in `folder`."""
    import torch
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    characters = CharactersConfig(characters_class="TTS.tts.models.vits.VitsCharacters", pad="_", eos="", bos="",
                                  blank=None, characters="abcdefghijklmnopqrstuvwxyz", punctuations="!'(),-.:;? ",
                                  phonemes=None, is_unique=True, is_sorted=True)
    args = VitsArgs(hidden_channels=16, hidden_channels_ffn_text_encoder=32, num_layers_text_encoder=1,
                    num_layers_posterior_encoder=1, num_layers_flow=1, resblock_kernel_sizes_decoder=[3],
                    resblock_dilation_sizes_decoder=[[1, 3, 5]], upsample_initial_channel_decoder=16,
                    init_discriminator=False, use_sdp=False)  # deterministic durations
    audio = BaseAudioConfig(sample_rate=sample_rate, hop_length=256, win_length=1024, fft_size=1024,
                            do_trim_silence=False)
    config = VitsConfig(model_args=args, use_phonemes=False, text_cleaner="basic_cleaners", characters=characters,
                        audio=audio)
    torch.manual_seed(0)
    model = Vits(config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_json(str(folder / "config.json"))
    torch.save({"model": model.state_dict()}, folder / "model.pth")
