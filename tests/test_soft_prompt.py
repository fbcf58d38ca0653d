"""insert_soft_prompt: the soft vectors land where asked, mask and labels grow to match, and the LM agrees."""
import pytest
import torch

from agent.embedding.soft_prompt import IGNORE_INDEX, insert_soft_prompt


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def batch(B=2, T=5, d=8):
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(B, T, d, generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, -2:] = 0  # right padding
    labels = torch.arange(B * T).view(B, T)
    return embeds, mask, labels


@pytest.mark.parametrize("position", [0, 2, 5])
def test_soft_vectors_mask_and_labels_are_inserted_at_the_position(position):
    embeds, mask, labels = batch()
    soft = torch.randn(3, 8)
    out, out_mask, out_labels = insert_soft_prompt(embeds, soft, mask, labels, position=position)
    assert out.shape == (2, 8, 8) and out_mask.shape == out_labels.shape == (2, 8)
    slots = slice(position, position + 3)
    assert torch.equal(out[:, slots], soft.expand(2, 3, 8))
    assert (out_mask[:, slots] == 1).all() and (out_labels[:, slots] == IGNORE_INDEX).all()
    keep = [i for i in range(8) if not position <= i < position + 3]
    assert torch.equal(out[:, keep], embeds) and torch.equal(out_mask[:, keep], mask)
    assert torch.equal(out_labels[:, keep], labels)
    assert out_mask.dtype == mask.dtype and out_labels.dtype == labels.dtype


def test_per_row_soft_prompts_and_no_labels():
    embeds, mask, _ = batch()
    soft = torch.randn(2, 4, 8)
    out, out_mask, out_labels = insert_soft_prompt(embeds, soft, mask)
    assert torch.equal(out[:, :4], soft) and out_labels is None and out_mask[:, :4].all()


def test_it_is_pure_and_casts_the_soft_prompt_to_the_embeddings_dtype():
    embeds, mask, labels = batch()
    embeds = embeds.to(torch.bfloat16)
    copies = [t.clone() for t in (embeds, mask, labels)]
    soft = torch.randn(3, 8, dtype=torch.float32)
    out, _, _ = insert_soft_prompt(embeds, soft, mask, labels, position=1)
    assert out.dtype == torch.bfloat16 and torch.equal(out[:, 1:4], soft.to(torch.bfloat16).expand(2, 3, 8))
    assert all(torch.equal(a, b) for a, b in zip((embeds, mask, labels), copies))


@pytest.mark.parametrize("soft, position, message", [
    (torch.zeros(3, 7), 0, "does not fit"), (torch.zeros(3, 2, 8), 0, "does not fit"), (torch.zeros(2, 8), 6, "outside 0..5"),
    (torch.zeros(2, 8), -1, "outside"),
])
def test_mismatched_inputs_are_refused(soft, position, message):
    embeds, mask, labels = batch()
    with pytest.raises(ValueError, match=message):
        insert_soft_prompt(embeds, soft, mask, labels, position=position)


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen"])
def test_soft_vectors_equal_to_token_embeddings_act_like_those_tokens(family, request):
    """Logits and loss match the same prompt written with the inserted tokens' ids (labels -100 there)."""
    lm = request.getfixturevalue(family)
    tokenizer, model = lm.tokenizer, lm.model
    ids = tokenizer("<|im_start|>system\nYou are the captain.", return_tensors="pt")["input_ids"]  # (1, T)
    inserted = tokenizer(" Aye, the sea!", add_special_tokens=False, return_tensors="pt")["input_ids"][0]  # (K,)
    position, K = 3, len(inserted)
    table = model.get_input_embeddings()
    with torch.no_grad():
        embeds, mask, labels = insert_soft_prompt(table(ids), table(inserted), torch.ones_like(ids), ids.clone(),
                                                  position=position)
        spliced = model(inputs_embeds=embeds, attention_mask=mask, labels=labels)
        full_ids = torch.cat([ids[:, :position], inserted[None], ids[:, position:]], dim=1)
        full_labels = full_ids.clone()
        full_labels[:, position:position + K] = IGNORE_INDEX
        written = model(input_ids=full_ids, attention_mask=torch.ones_like(full_ids), labels=full_labels)
    torch.testing.assert_close(spliced.logits, written.logits)
    torch.testing.assert_close(spliced.loss, written.loss)
