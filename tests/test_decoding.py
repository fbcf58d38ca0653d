import threading

import pytest
import torch

from agent.chat.decoding import CachedDecoder
from agent.chat.stream import ReplyStream, common_prefix_length
from agent.chat.sampling import SamplingOptions

GREEDY = SamplingOptions(max_new_tokens=12, temperature=0.0, repetition_penalty=1.0)


def _ids(lm, text):
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def _reply(decoder, lm, ids, options=GREEDY, stops=(), cancel=None):
    stream = ReplyStream(decoder, lm.tokenizer, ids, options, stops, cancel)
    text = "".join(stream)
    return text, stream


@pytest.fixture(params=["tiny_llama", "tiny_qwen"])
def lm(request):
    return request.getfixturevalue(request.param)


def test_common_prefix_length():
    assert common_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([], [1]) == 0


def test_greedy_with_reused_cache_equals_recomputed_from_scratch(lm):
    """Three growing turns: the cached decoder must produce exactly the from-scratch tokens."""
    cached, fresh = CachedDecoder(lm.model), CachedDecoder(lm.model, reuse_cache=False)
    conversation = "system: be a pirate\n"
    for user in ["user: hello there\n", "user: what ship is this?\n", "user: tell me a story\n"]:
        conversation += user
        ids = _ids(lm, conversation)
        text_cached, s1 = _reply(cached, lm, ids)
        text_fresh, s2 = _reply(fresh, lm, ids)
        assert text_cached == text_fresh
        assert s2.stats.prefill_tokens == len(ids)
        conversation += text_cached + "\n"
    assert s1.stats.prefill_tokens < len(ids) // 2, "the last turn should mostly come from the cache"


def test_logits_match_after_reuse(lm):
    cached = CachedDecoder(lm.model)
    a, b = _ids(lm, "one two three four five"), _ids(lm, "one two three four five six seven")
    cached.prefill(a)
    logits_cached, ran = cached.prefill(b)
    logits_fresh, _ = CachedDecoder(lm.model, reuse_cache=False).prefill(b)
    assert ran == len(b) - len(a)
    torch.testing.assert_close(logits_cached, logits_fresh, rtol=1e-4, atol=1e-4)


def test_divergent_prompt_crops_cache_to_the_common_prefix(tiny_llama):
    lm = tiny_llama
    d = CachedDecoder(lm.model)
    a = _ids(lm, "alpha beta gamma delta")
    b = a[:3] + _ids(lm, " something else entirely")
    d.prefill(a)
    _, ran = d.prefill(b)
    assert ran == len(b) - 3 and d.ids == b
    logits, _ = d.prefill(b)  # identical prompt: only the last token reruns
    fresh, _ = CachedDecoder(lm.model, reuse_cache=False).prefill(b)
    torch.testing.assert_close(logits, fresh, rtol=1e-4, atol=1e-4)


def test_stop_string_cuts_the_reply_and_is_never_shown(tiny_llama):
    lm = tiny_llama
    ids = _ids(lm, "hello")
    full, _ = _reply(CachedDecoder(lm.model), lm, ids, SamplingOptions(max_new_tokens=20, temperature=0.0))
    assert len(full) > 6
    stop = full[3:6]
    pieces = list(ReplyStream(CachedDecoder(lm.model), lm.tokenizer, ids,
                              SamplingOptions(max_new_tokens=20, temperature=0.0), [stop]))
    assert "".join(pieces) == full[:full.find(stop)]


def test_cancel_stops_generation(tiny_llama):
    lm = tiny_llama
    cancel = threading.Event()
    stream = ReplyStream(CachedDecoder(lm.model), lm.tokenizer, _ids(lm, "hi"),
                         SamplingOptions(max_new_tokens=50, temperature=0.0), (), cancel)
    for i, _ in enumerate(stream):
        if i == 1:
            cancel.set()
    assert stream.stats.stopped_by == "cancelled" and stream.stats.new_tokens < 50


def test_seeded_sampling_is_reproducible(tiny_llama):
    lm = tiny_llama
    opts = SamplingOptions(max_new_tokens=10, temperature=1.0, top_p=0.95, top_k=40, seed=123)
    ids = _ids(lm, "once upon a time")
    a, _ = _reply(CachedDecoder(lm.model), lm, ids, opts)
    b, _ = _reply(CachedDecoder(lm.model), lm, ids, opts)
    assert a == b


def test_interrupted_forward_drops_the_cache(tiny_llama, monkeypatch):
    lm = tiny_llama
    d = CachedDecoder(lm.model)
    d.prefill(_ids(lm, "a cached prefix"))

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(d, "model", boom)
    with pytest.raises(KeyboardInterrupt):
        d.step(5)
    assert d.cache is None and d.ids == []
