"""The soft-prompt splice: slots cut into pieces in order, the LM's input embeddings built from them agree with
the tokens they stand for, and every backend and training goes through it."""
import numpy as np
import pytest
import torch

from agent.embedding.soft_prompt import at_norm, inputs_embeds, pieces, soft_placeholders


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def test_placeholders_count_down_from_minus_one():
    assert soft_placeholders(3) == [-1, -2, -3] and soft_placeholders(0) == []


def test_pieces_alternate_token_runs_and_soft_rows_in_order():
    soft = torch.arange(12.0).view(3, 4)  # K=3, d=4
    out = pieces([5, 6, -1, -2, 7, -3], soft)
    assert [flag for flag, _ in out] == [False, True, False, True]
    assert out[0][1] == [5, 6] and out[2][1] == [7]
    assert torch.equal(out[1][1], soft[:2]) and torch.equal(out[3][1], soft[2:3])
    # slot -k is row k-1 whatever order the slots come in; numpy rows work the same
    np.testing.assert_array_equal(pieces([-2, -1], soft.numpy())[0][1], soft.numpy()[[1, 0]])
    assert pieces([1, 2, 3], None) == [(False, [1, 2, 3])]


@pytest.mark.parametrize("ids, soft, message", [([1, -1], None, "no soft prompt"), ([-4], torch.zeros(3, 2), "beyond")])
def test_slots_without_vectors_are_refused(ids, soft, message):
    with pytest.raises(ValueError, match=message):
        pieces(ids, soft)


def test_gradients_flow_into_the_soft_vectors():
    table = torch.nn.Embedding(10, 4)
    soft = torch.randn(2, 4, requires_grad=True)
    embeds = inputs_embeds(table, torch.tensor([[3, -1, -2, 4]]), soft)  # (1, 4, 4)
    embeds.sum().backward()
    assert embeds.shape == (1, 4, 4) and torch.equal(soft.grad, torch.ones(2, 4))


def test_per_row_soft_prompts_and_dtype():
    table = torch.nn.Embedding(10, 4).to(torch.bfloat16)
    soft = torch.randn(2, 1, 4)  # (B, K, d), float32
    embeds = inputs_embeds(table, torch.tensor([[-1, 3], [-1, 5]]), soft)
    assert embeds.dtype == torch.bfloat16
    assert torch.equal(embeds[:, 0], soft[:, 0].to(torch.bfloat16))
    assert torch.equal(embeds[1, 1], table.weight[5])


def test_at_norm_keeps_directions_at_the_given_length():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    out = at_norm(x, 10.0)
    torch.testing.assert_close(out.norm(dim=-1), torch.tensor([10.0, 10.0]))
    torch.testing.assert_close(out[0] / 10, x[0] / 5)


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen"])
def test_soft_vectors_equal_to_token_embeddings_act_like_those_tokens(family, request):
    """The LM on a prompt whose slots hold real token embeddings gives the logits of the prompt written with them."""
    lm = request.getfixturevalue(family)
    tokenizer, model = lm.tokenizer, lm.model
    ids = tokenizer("<|im_start|>system\nYou are the captain.", add_special_tokens=False)["input_ids"]
    inserted = tokenizer(" Aye, the sea!", add_special_tokens=False)["input_ids"]
    position, K = 3, len(inserted)
    table = model.get_input_embeddings()
    slotted = ids[:position] + soft_placeholders(K) + ids[position:]
    with torch.no_grad():
        soft = table(torch.tensor(inserted))  # (K, d)
        spliced = model(inputs_embeds=inputs_embeds(table, torch.tensor([slotted]), soft)).logits
        written = model(input_ids=torch.tensor([ids[:position] + inserted + ids[position:]])).logits
    torch.testing.assert_close(spliced, written)
