from pathlib import Path

import pytest

from agent.config import Config, ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_default_yaml_is_the_dataclass_default():
    assert load_config(CONFIGS / "default.yaml") == Config()


@pytest.mark.parametrize("name", ["tiny.yaml", "gpu.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert isinstance(config, Config)


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("chat:\n  temprature: 0.3\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "temprature" in str(e.value) and str(path) in str(e.value) and "temperature" in str(e.value)


def test_unknown_section_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lmm:\n  dtype: float32\n")
    with pytest.raises(ConfigError, match="lmm"):
        load_config(path)


def test_wrong_type_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("chat:\n  max_new_tokens: lots\n")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        load_config(path)


def test_overrides_beat_the_file_and_are_typed():
    config = load_config(CONFIGS / "tiny.yaml", ["chat.temperature=0.5", "chat.seed=7", "lm.name_or_path=random:qwen"])
    assert config.chat.temperature == 0.5 and config.chat.seed == 7 and config.lm.name_or_path == "random:qwen"


def test_override_of_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="bogus"):
        load_config(None, ["chat.bogus=1"])


def test_bad_combination_is_refused():
    with pytest.raises(ConfigError, match="context_tokens"):
        load_config(None, ["chat.context_tokens=100", "chat.max_new_tokens=200"])


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("chat: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(bad)


def test_gpu_config_loaders_fail_fast_without_their_weights(tmp_path, monkeypatch, network_attempts):
    """configs/gpu.yaml names weights that are not on this machine: each loader says so without a download."""
    from agent.models.clip import load_clip
    from agent.models.lm import load_lm
    from agent.models.packages import MissingWeights
    from agent.models.whisper import load_whisper
    from agent.speech.tts import load_synthesizer
    from agent.speech.voice import voice_settings

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TTS_HOME", str(tmp_path / "tts"))
    config = load_config(CONFIGS / "gpu.yaml")
    attempts = {
        "lm": lambda: load_lm(config.lm.name_or_path, dtype=config.lm.dtype, device="cpu"),
        "whisper": lambda: load_whisper(config.whisper.name_or_path),
        "clip": lambda: load_clip(config.clip.model, config.clip.pretrained),
        "tts": lambda: load_synthesizer(voice_settings(config.tts)),
    }
    for name, attempt in attempts.items():
        with pytest.raises(MissingWeights) as e:
            attempt()
        assert network_attempts == [], name
        assert len(str(e.value)) > 30, name


def test_exponent_notation_without_a_dot_is_a_float_not_a_string():
    # YAML 1.1 reads 1e-3 as a string; users write it for learning rates and temperatures
    assert load_config(None, ["chat.temperature=5e-1"]).chat.temperature == 0.5
    from agent.training.config import load_train_config

    assert load_train_config(None, ["lr=1e-2"]).lr == 0.01
    with pytest.raises(ConfigError, match="chat.temperature"):
        load_config(None, ["chat.temperature=1e-2x"])


def test_the_scheduler_settings_refuse_impossible_values_naming_the_key():
    from agent.config import ConfigError, load_config

    for bad, key in (("lm.step_tokens=0", "lm.step_tokens"), ("lm.spill_ram_mb=-1", "lm.spill_ram_mb"),
                     ("lm.max_concurrency=0", "lm.max_concurrency")):
        with pytest.raises(ConfigError, match=key):
            load_config(None, [bad])
