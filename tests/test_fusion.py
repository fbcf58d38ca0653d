"""Fusion adapters: shapes and norms, masking of missing modalities, zero gates, saving and reloading."""
import dataclasses

import pytest
import torch

from agent.embedding.config import FUSION_TYPES, FusionConfig
from agent.embedding.encoders import ModalityTokens
from agent.embedding.fusion import (FUSIONS, AttentionFusion, WeightedFusion, build_fusion, collate, embedding_norm,
                                    load_adapter, save_adapter)
from agent.embedding.soft_prompt import inputs_embeds, soft_placeholders

DIMS = {"image": 32, "audio": 24, "text": 64}
D_LM = 64
SMALL = dict(k=4, width=32, depth=2, heads=4)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def persona_tokens(seed: int, *, image: int = 17, audio: int = 8, text: int = 30) -> dict[str, ModalityTokens]:
    """Random modality tokens; a count of 0 makes that modality missing."""
    g = torch.Generator().manual_seed(seed)
    counts = {"image": image, "audio": audio, "text": text}
    return {m: ModalityTokens(torch.randn(n, DIMS[m], generator=g), True) if n else ModalityTokens.missing(DIMS[m])
            for m, n in counts.items()}


def fusion(kind: str, *, open_gates: bool = True, seed: int = 0, **options):
    torch.manual_seed(seed)
    module = build_fusion(FusionConfig(type=kind, **{**SMALL, **options}), DIMS, D_LM, target_norm=0.7).eval()
    if open_gates and kind == "attention":
        with torch.no_grad():
            for name, param in module.named_parameters():
                if name.endswith("_gate"):
                    param.fill_(0.5)
    return module


@pytest.mark.parametrize("kind", FUSION_TYPES)
def test_k_vectors_of_the_lm_width_at_the_embedding_norm(kind):
    module = fusion(kind)
    media, mask = collate([persona_tokens(1), persona_tokens(2, audio=0)], DIMS)
    assert media["image"].shape == (2, 17, 32) and mask["audio"].tolist() == [[True] * 8, [False] * 8]
    out = module(media, mask)
    assert out.shape == (2, 4, D_LM)
    torch.testing.assert_close(out.norm(dim=-1), torch.full((2, 4), 0.7))
    assert module.soft_prompt(persona_tokens(1)).shape == (4, D_LM)
    torch.testing.assert_close(module.soft_prompt(persona_tokens(1)), out[0])


@pytest.mark.parametrize("kind", FUSION_TYPES)
def test_a_missing_modality_is_masked_out(kind):
    module = fusion(kind)
    without_voice = persona_tokens(1, audio=0)
    reference = module.soft_prompt(without_voice)
    # the same whether the modality is absent from the dict or marked not present
    torch.testing.assert_close(module.soft_prompt({m: t for m, t in without_voice.items() if m != "audio"}), reference)
    # padding in a batch never leaks in: each row equals its persona alone
    batch = [persona_tokens(1, audio=0), persona_tokens(3, audio=8, text=50)]
    out = module(*collate(batch, DIMS))
    torch.testing.assert_close(out[0], reference)
    torch.testing.assert_close(out[1], module.soft_prompt(batch[1]))
    # and the voice does change the prompt when it is present (select reads the card text only)
    with_voice = {**without_voice, "audio": persona_tokens(1)["audio"]}  # only the voice differs
    assert torch.allclose(module.soft_prompt(with_voice), reference, atol=1e-4) == (kind == "select")


def test_weighted_fusion_renormalises_the_weights_of_present_modalities():
    module = fusion("weighted", image_weight=1.0, text_weight=3.0, audio_weight=5.0, learn_weights=False)
    seen = []
    module.to_lm.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    tokens = persona_tokens(1, audio=0)
    module.soft_prompt(tokens)
    with torch.no_grad():
        image, text = (module.inputs[m](tokens[m].tokens).mean(0) for m in ("image", "text"))
    torch.testing.assert_close(seen[0][0], (1.0 * image + 3.0 * text) / 4.0)  # γ dropped with the missing voice


def test_learned_weights_stay_positive_and_start_at_the_config_values():
    module = fusion("weighted", image_weight=0.5, text_weight=2.0, audio_weight=1.0)
    torch.testing.assert_close(module.weights(), torch.tensor([0.5, 1.0, 2.0]))  # dims order: image, audio, text
    assert any(name == "log_weights" for name, _ in module.named_parameters())


def test_zero_gates_make_the_adapter_media_blind_so_the_lm_output_does_not_change(tiny_llama):
    """Fresh gates are 0: whatever portrait, voice and card (or none), the LM sees the same soft prompt."""
    torch.manual_seed(0)
    module = build_fusion(FusionConfig(**SMALL), DIMS, D_LM, embedding_norm(tiny_llama.model)).eval()
    prompts = [module.soft_prompt(t) for t in (persona_tokens(1), persona_tokens(2, image=0, text=9),
                                                 persona_tokens(3, image=0, audio=0, text=0))]
    assert all(torch.equal(p, prompts[0]) for p in prompts)
    ids = soft_placeholders(4) + tiny_llama.tokenizer("Ahoy, who goes there?")["input_ids"]
    table = tiny_llama.model.get_input_embeddings()
    logits = []
    for soft in prompts:
        with torch.no_grad():
            logits.append(tiny_llama.model(inputs_embeds=inputs_embeds(table, torch.tensor([ids]), soft)).logits)
    assert all(torch.equal(x, logits[0]) for x in logits)
    # not vacuous: the gates get gradients at once, and opened gates let the media through
    module.train()
    target = torch.randn(4, D_LM, generator=torch.Generator().manual_seed(5))
    (module.soft_prompt(persona_tokens(1)) - target).pow(2).sum().backward()
    assert all(module.layers[i].attn_gate.grad.abs().item() > 0 for i in range(len(module.layers)))
    with torch.no_grad():
        module.layers[0].attn_gate.fill_(0.5)
    module.eval()
    assert not torch.allclose(module.soft_prompt(persona_tokens(1)), module.soft_prompt(persona_tokens(2)))


def test_an_outputs_start_is_media_blind_too_but_its_media_paths_learn_from_the_first_step():
    """harmless_start=outputs (LoRA's way): zero output projections instead of zero gates. The fresh adapter
    gives every persona the same prompt, and unlike zero gates, the zeroed projections get gradients at once."""
    torch.manual_seed(0)
    module = build_fusion(FusionConfig(**SMALL, harmless_start="outputs"), DIMS, D_LM, target_norm=0.7).eval()
    fresh = [module.soft_prompt(persona_tokens(i)) for i in (1, 2)]
    assert torch.equal(fresh[0], fresh[1])
    module.train()
    target = torch.randn(4, D_LM, generator=torch.Generator().manual_seed(5))
    (module.soft_prompt(persona_tokens(1)) - target).pow(2).sum().backward()
    assert module.media_to_latents.weight.grad.abs().sum() > 0
    assert module.layers[-1].attn.to_out.weight.grad.abs().sum() > 0  # the last layer's cross-attention
    gates = build_fusion(FusionConfig(**SMALL), DIMS, D_LM, target_norm=0.7).train()
    (gates.soft_prompt(persona_tokens(1)) - target).pow(2).sum().backward()
    assert gates.layers[-1].attn.to_out.weight.grad.abs().sum() == 0  # behind a zero gate: nothing to learn from
    with torch.no_grad():
        optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
        optimizer.step()
    module.eval()
    assert not torch.allclose(module.soft_prompt(persona_tokens(1)), module.soft_prompt(persona_tokens(2)))


def test_harmless_start_is_checked():
    with pytest.raises(ValueError, match="harmless_start"):
        FusionConfig(harmless_start="ones")


@pytest.mark.parametrize("kind", FUSION_TYPES)
def test_a_saved_adapter_reloads_from_its_file_alone_to_identical_outputs(tmp_path, kind):
    module = fusion(kind, seed=7)
    path = save_adapter(tmp_path / "adapters" / f"{kind}.safetensors", module)
    loaded = load_adapter(path)
    assert type(loaded) is type(module) and loaded.config == module.config
    assert loaded.dims == DIMS and loaded.d_lm == D_LM and loaded.target_norm.item() == pytest.approx(0.7)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for tokens in (persona_tokens(1), persona_tokens(2, audio=0)):
        assert torch.equal(loaded.soft_prompt(tokens), module.soft_prompt(tokens))


def test_load_adapter_refuses_other_files_naming_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_adapter(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_adapter(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="other.safetensors.*format"):
        load_adapter(other)


def test_tokens_from_another_encoder_width_are_refused():
    module = fusion("attention")
    wrong = {**persona_tokens(1), "audio": ModalityTokens(torch.zeros(8, 512), True)}
    with pytest.raises(ValueError, match="audio tokens have shape \\(8, 512\\).*width 24"):
        module.soft_prompt(wrong)


def test_the_registry_and_the_config_agree_and_unknown_types_are_refused():
    assert set(FUSIONS) == set(FUSION_TYPES)
    assert FUSIONS["attention"] is AttentionFusion and FUSIONS["weighted"] is WeightedFusion
    with pytest.raises(ValueError, match="fusion.type 'mlp' is not one of: attention, weighted"):
        FusionConfig(type="mlp")
    config = FusionConfig()
    object.__setattr__(config, "type", "mlp")  # past the config's own check
    with pytest.raises(ValueError, match="'mlp' is not one of: attention, weighted"):
        build_fusion(config, DIMS, D_LM, 1.0)
    with pytest.raises(ValueError, match="at least one modality"):
        build_fusion(FusionConfig(), {}, D_LM, 1.0)


@pytest.mark.parametrize("changes, field", [
    ({"k": 0}, "k"), ({"width": 30, "heads": 4}, "heads"), ({"depth": 0}, "depth"), ({"dropout": 1.0}, "dropout"),
    ({"audio_weight": -1.0}, "audio_weight"), ({"image_weight": 0.0}, "image_weight"),
    ({"image_weight": 0.0, "text_weight": 0.0, "audio_weight": 0.0, "learn_weights": False}, "image_weight"),
])
def test_fusion_config_refuses_bad_values_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=f"fusion.{field}"):
        dataclasses.replace(FusionConfig(), **changes)


def test_a_fresh_adapter_trains_its_latents_and_output_projection():
    module = fusion("attention", open_gates=False).train()
    target = torch.randn(4, D_LM, generator=torch.Generator().manual_seed(5))
    (module.soft_prompt(persona_tokens(1)) - target).pow(2).sum().backward()
    assert module.latents.grad.abs().sum() > 0 and module.to_lm.weight.grad.abs().sum() > 0


def test_select_fusion_returns_card_token_vectors_and_a_fallback_without_text():
    module = fusion("select")
    tokens = persona_tokens(1)
    text = tokens["text"].tokens  # (30, 64): with encoder.text_layer 0, the card's input embeddings
    with torch.no_grad():
        module.log_scale.fill_(12.0)  # a very sharp selection picks single card tokens
    picked = module.soft_prompt(tokens)  # (4, 64)
    nearest = torch.nn.functional.cosine_similarity(picked[:, None], text[None], dim=-1).max(dim=1).values
    assert torch.all(nearest > 0.999)
    other = persona_tokens(2)
    assert not torch.allclose(module.soft_prompt(other), picked)
    no_text = module.soft_prompt(persona_tokens(1, text=0))
    torch.testing.assert_close(no_text, module.rescale(module.fallback[None])[0])
    with pytest.raises(ValueError, match="text_layer"):
        build_fusion(FusionConfig(type="select", **SMALL), {"text": 32}, D_LM, target_norm=0.7)
    with pytest.raises(ValueError, match="select_scale"):
        FusionConfig(type="select", select_scale=0.0)
