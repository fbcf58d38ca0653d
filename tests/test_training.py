"""Adapter training by context distillation on the tiny config: teacher cache, loss, checkpoints, resume, seeds."""
import dataclasses

import pytest
import torch
import yaml
from safetensors.torch import load_file

from agent.agent import Agent
from agent.config import load_config
from agent.embedding.fusion import load_adapter, save_adapter
from agent.training import TrainConfig, load_train_config, train
from agent.training import distill, teacher as teacher_module
from agent.training.data import draw_examples, load_training_data
from agent.training.distill import distill_loss, fit_adapter, make_batch, run_identity, student_examples
from agent.training.teacher import encode_personas, precompute_teacher

from conftest import TINY_CONFIG
from test_encoders import write_persona

SMALL_FUSION = ["fusion.k=4", "fusion.width=32", "fusion.depth=1", "fusion.heads=2"]
TURNS = ["Hello!", "Where did you grow up?", "Tell me a secret.", "Go on.", "What do you want?", "Why?"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def write_dataset(root):
    """A data/ folder in the real layout: 3 train personas, 1 held-out one, 4 train and 2 held-out turns."""
    looks = {"mara": ("Mara", (200, 40, 10), 220.0), "hale": ("Hale", (10, 120, 40), 140.0),
             "pixel": ("Pixel", (30, 30, 220), 330.0)}
    for slug, (name, colour, pitch) in looks.items():
        write_persona(root / "personas" / slug, name=name, description=f"{name} is a character of few words.",
                      colour=colour, pitch=pitch, seconds=1.0)
    turns = [{"id": i, "kind": "small_talk", "text": text} for i, text in enumerate(TURNS)]
    (root / "user_turns.yaml").write_text(yaml.safe_dump({"turns": turns}))
    splits = {"personas": {"train": list(looks), "held_out": ["ghost"]},
              "user_turns": {"train": [0, 2, 3, 5], "held_out": [1, 4]}}
    (root / "splits.yaml").write_text(yaml.safe_dump(splits))
    return root


@pytest.fixture()
def dataset(tmp_path):
    return write_dataset(tmp_path / "data")


@pytest.fixture()
def config():
    return load_config(TINY_CONFIG, SMALL_FUSION)


def train_config(dataset, tmp_path, **changes) -> TrainConfig:
    base = TrainConfig(data_dir=str(dataset), examples_per_persona=2, reply_tokens=8, top_k=8, epochs=3,
                       batch_size=2, lr=5e-3, warmup_steps=1, checkpoint_every=2,
                       out=str(tmp_path / "adapters" / "tiny.safetensors"), work_dir=str(tmp_path / "work"))
    return dataclasses.replace(base, **changes)


def test_teacher_replies_have_top_k_per_position_and_are_cached(dataset, tmp_path, tiny_llama, config, monkeypatch):
    cfg = train_config(dataset, tmp_path)
    data = load_training_data(dataset)
    examples = draw_examples(data, 2, seed=0)
    assert len(examples) == 6 and {e.turn_id for e in examples} <= {0, 2, 3, 5}  # never a held-out turn
    assert "ghost" not in data.personas
    teacher = precompute_teacher(tiny_llama, data.personas, examples, data.files, cfg, config.chat, tmp_path / "w")
    assert len(teacher.replies) == 6
    for reply in teacher.replies:
        R = len(reply.ids)
        assert 1 <= R <= 8 and reply.topk_ids.shape == (R, 8) and reply.topk_logprobs.shape == (R, 8)
        assert (reply.topk_logprobs <= 0).all() and (reply.topk_logprobs.diff(dim=-1) <= 1e-3).all()
    assert len(list((tmp_path / "w").glob("teacher-*.safetensors"))) == 1
    assert len(list((tmp_path / "w").glob("teacher-*.json"))) == 1

    monkeypatch.setattr(teacher_module, "teacher_replies", lambda *a, **k: pytest.fail("the cache was not used"))
    again = precompute_teacher(tiny_llama, data.personas, examples, data.files, cfg, config.chat, tmp_path / "w")
    assert again.key == teacher.key
    for a, b in zip(again.replies, teacher.replies):
        assert torch.equal(a.ids, b.ids) and torch.equal(a.topk_ids, b.topk_ids)
        assert torch.equal(a.topk_logprobs, b.topk_logprobs)  # rounded to float16 before use, so a rerun trains alike


def test_an_interrupted_teacher_run_continues_where_it_stopped(dataset, tmp_path, tiny_llama, config, monkeypatch):
    cfg = train_config(dataset, tmp_path, teacher_batch=2)
    data = load_training_data(dataset)
    examples = draw_examples(data, 2, seed=0)
    full = precompute_teacher(tiny_llama, data.personas, examples, data.files, cfg, config.chat, tmp_path / "a")
    real, state = teacher_module.teacher_replies, {"batches": 0, "interrupt": True}

    def flaky(decoder, prompts, **kwargs):
        if state["interrupt"] and state["batches"] == 1:
            raise KeyboardInterrupt  # in the second of three batches
        state["batches"] += 1
        return real(decoder, prompts, **kwargs)

    monkeypatch.setattr(teacher_module, "teacher_replies", flaky)
    with pytest.raises(KeyboardInterrupt):
        precompute_teacher(tiny_llama, data.personas, examples, data.files, cfg, config.chat, tmp_path / "b")
    state.update(batches=0, interrupt=False)
    again = precompute_teacher(tiny_llama, data.personas, examples, data.files, cfg, config.chat, tmp_path / "b")
    assert state["batches"] == 2  # the first batch came from disk
    assert [r.ids.tolist() for r in again.replies] == [r.ids.tolist() for r in full.replies]


def test_batched_teacher_replies_equal_one_at_a_time(dataset, tiny_llama, config):
    from agent.chat.decoding import CachedDecoder
    from agent.chat.prompt import fit_prompt
    from agent.chat.sampling import SamplingOptions
    from agent.chat.template import stop_token_ids
    from agent.training.data import conversation

    data = load_training_data(dataset)
    prompts = [fit_prompt(tiny_llama.tokenizer, data.personas[e.persona].card,
                          conversation(data.personas[e.persona].card, e.turn, "User", with_greeting=g),
                          "User", budget=1000).ids
               for g in (False, True) for e in draw_examples(data, 2, seed=0)]
    assert len({len(p) for p in prompts}) > 2  # rows of different lengths get padded
    options = SamplingOptions(temperature=0.0, repetition_penalty=1.1,
                              eos_token_ids=stop_token_ids(tiny_llama.tokenizer, tiny_llama.model.generation_config))
    run = dict(max_tokens=10, top_k=5, options=options)
    batched = teacher_module.teacher_replies(CachedDecoder(tiny_llama.model), prompts, **run)
    for prompt, reply in zip(prompts, batched):
        [alone] = teacher_module.teacher_replies(CachedDecoder(tiny_llama.model), [prompt], **run)
        assert torch.equal(reply.ids, alone.ids) and torch.equal(reply.topk_ids, alone.topk_ids)
        assert torch.allclose(reply.topk_logprobs, alone.topk_logprobs, atol=2e-2)
        assert reply.stopped_by == alone.stopped_by


def test_student_sees_soft_slots_and_no_card_in_soft_mode(dataset, tmp_path, tiny_llama, config):
    data = load_training_data(dataset)
    examples = draw_examples(data, 2, seed=0)
    cfg = train_config(dataset, tmp_path)
    teacher = precompute_teacher(tiny_llama, data.personas, examples, data.files, cfg, config.chat, tmp_path / "w")
    soft = student_examples(tiny_llama, data.personas, teacher, cfg, config.chat, k=4)
    both = student_examples(tiny_llama, data.personas, teacher, dataclasses.replace(cfg, student_mode="soft+card"),
                            config.chat, k=4)
    text = tiny_llama.tokenizer.decode([i for i in both[0].prompt_ids if i >= 0])
    assert "few words" in text and "few words" not in tiny_llama.tokenizer.decode(
        [i for i in soft[0].prompt_ids if i >= 0])
    assert sorted(i for i in soft[0].prompt_ids if i < 0) == [-4, -3, -2, -1]
    batch = make_batch(soft[:2], 0)
    first = soft[0]
    P = len(first.prompt_ids)
    # position P-1 (the last prompt token) predicts the first reply token
    assert batch.cols[0] == P - 1 and batch.targets[0] == first.reply.ids[0]
    assert batch.targets.shape[0] == sum(len(e.reply.ids) for e in soft[:2])


def test_kl_is_zero_when_the_student_matches_the_teacher():
    torch.manual_seed(0)
    logits = torch.randn(5, 16)
    logprobs = torch.log_softmax(logits, -1)
    top = torch.topk(logprobs, 16)
    batch = distill.StudentBatch(torch.zeros(1, 1), torch.ones(1, 1), torch.zeros(5), torch.arange(5),
                                 top.indices[:, 0], top.indices, top.values)
    cfg = TrainConfig(kl_weight=1.0, lm_weight=0.0, temperature=2.0)
    same, parts = distill_loss(logits, batch, cfg)
    assert abs(same.item()) < 1e-5 and abs(parts["kl"]) < 1e-5
    other, _ = distill_loss(torch.randn(5, 16), batch, cfg)
    assert other.item() > 0.01


def prepared(dataset, tmp_path, lm, config, cfg):
    """Teacher, persona encodings and student examples, as `train` prepares them."""
    agent = Agent(config, home=tmp_path / "home", lm=lm)
    data = load_training_data(dataset)
    examples = draw_examples(data, cfg.examples_per_persona, cfg.seed)
    teacher = precompute_teacher(lm, data.personas, examples, data.files, cfg, config.chat, tmp_path / "work")
    encoder = agent.persona_encoder()
    modalities = encode_personas(data.personas, encoder, tmp_path / "embeddings")
    students = student_examples(lm, data.personas, teacher, cfg, config.chat, config.fusion.k)
    return teacher, modalities, students, encoder.dims


@pytest.mark.parametrize("fusion", ["attention", "weighted"])
def test_training_steps_reduce_the_loss_on_a_fixed_batch(dataset, tmp_path, tiny_llama, fusion):
    # every step sees all 6 examples, so first and last loss are measured on the same batch
    config = load_config(TINY_CONFIG, SMALL_FUSION + [f"fusion.type={fusion}"])
    cfg = train_config(dataset, tmp_path, batch_size=6, epochs=8, lr=1e-2)
    summary = train(config, cfg, home=tmp_path / "home", lm=tiny_llama)
    assert summary["steps"] == 8 and len(summary["losses"]) == 8
    assert summary["last_loss"] < 0.9 * summary["first_loss"], summary["losses"]
    assert summary["eval_loss_after"] < 0.9 * summary["eval_loss_before"]
    record = yaml.safe_load((tmp_path / "adapters" / "tiny.json").read_text())
    assert record["train"]["batch_size"] == 6 and record["fusion"]["k"] == 4


def test_a_saved_adapter_reloads_to_identical_soft_prompts(dataset, tmp_path, tiny_llama, config):
    cfg = train_config(dataset, tmp_path, epochs=1)
    teacher, modalities, students, dims = prepared(dataset, tmp_path, tiny_llama, config, cfg)
    identity = run_identity(cfg, config.fusion, teacher.key, tiny_llama.source)
    adapter, summary = fit_adapter(tiny_llama, modalities, students, cfg, config.fusion, dims,
                                   checkpoints=tmp_path / "ckpt", identity=identity)
    loaded = load_adapter(save_adapter(tmp_path / "a.safetensors", adapter))
    prompts = []
    for slug, tokens in modalities.items():
        with torch.no_grad():
            mine, theirs = adapter.soft_prompt(tokens), loaded.soft_prompt(tokens)
        assert mine.shape == (4, 64) and torch.equal(mine, theirs)
        prompts.append(mine)
    assert not torch.allclose(prompts[0], prompts[1])  # trained gates open: personas differ


def _weights(path):
    return load_file(path)


def test_resuming_after_an_interruption_ends_with_the_same_weights(dataset, tmp_path, tiny_llama, config, monkeypatch):
    cfg = train_config(dataset, tmp_path, epochs=2, out=str(tmp_path / "full.safetensors"))
    full = train(config, cfg, home=tmp_path / "home", lm=tiny_llama)

    calls = {"n": 0}
    real = distill.distill_loss

    def interrupted(*args, **kwargs):
        calls["n"] += torch.is_grad_enabled()  # training steps, not the scoring before and after
        if calls["n"] == 4:  # step 3 of 6: the checkpoint of step 2 is on disk
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    cut = dataclasses.replace(cfg, out=str(tmp_path / "resumed.safetensors"), work_dir=str(tmp_path / "work2"))
    monkeypatch.setattr(distill, "distill_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config, cut, home=tmp_path / "home", lm=tiny_llama)
    monkeypatch.setattr(distill, "distill_loss", real)
    resumed = train(config, cut, home=tmp_path / "home", lm=tiny_llama, resume=True)
    assert resumed["steps_run"] == full["steps"] - 2
    assert resumed["losses"] == full["losses"] and resumed["eval_loss_after"] == full["eval_loss_after"]
    a, b = _weights(tmp_path / "full.safetensors"), _weights(tmp_path / "resumed.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    with pytest.raises(ValueError, match="differs"):  # another run's checkpoint is refused
        train(config, dataclasses.replace(cut, lr=1e-4), home=tmp_path / "home", lm=tiny_llama, resume=True)


def test_a_fixed_seed_reproduces_a_run_and_another_seed_does_not(dataset, tmp_path, tiny_llama, config):
    def run(name, seed):
        cfg = train_config(dataset, tmp_path, epochs=1, seed=seed, out=str(tmp_path / f"{name}.safetensors"),
                           work_dir=str(tmp_path / f"work-{name}"))
        train(config, cfg, home=tmp_path / "home", lm=tiny_llama)
        return _weights(tmp_path / f"{name}.safetensors")

    a, b, c = run("a", 0), run("b", 0), run("c", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bf16_mixed_precision_trains_after_a_full_precision_run_in_the_same_process(dataset, tmp_path, tiny_llama,
                                                                                   config):
    for precision in ("no", "bf16"):  # accelerate's process-wide state must not pin the first run's choice
        cfg = train_config(dataset, tmp_path, epochs=2, mixed_precision=precision, work_dir=str(tmp_path / precision))
        summary = train(config, cfg, home=tmp_path / "home", lm=tiny_llama)
        assert summary["eval_loss_after"] < summary["eval_loss_before"]


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("top_k", 0), ("lr", 0.0), ("student_mode", "card"), ("mixed_precision", "fp8"),
    ("out", "adapter.pt"), ("personas", -1), ("val_personas", -1), ("contrast_weight", -1.0),
    ("contrast_lines", 0), ("contrast_negatives", 0)])
def test_train_config_refuses_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_train_config_loads_from_yaml_with_overrides(tmp_path):
    from agent.config import ConfigError

    path = tmp_path / "train.yaml"
    path.write_text("epochs: 2\nlr: 0.001\n")
    cfg = load_train_config(path, ["train.batch_size=8", "seed=3"])
    assert (cfg.epochs, cfg.batch_size, cfg.seed) == (2, 8, 3)
    path.write_text("epoch: 2\n")
    with pytest.raises(ConfigError, match="epoch"):
        load_train_config(path)


def test_gates_learn_faster_and_without_decay():
    from agent.embedding.config import FusionConfig
    from agent.embedding.fusion import build_fusion
    from agent.training.config import TrainConfig
    from agent.training.distill import param_groups

    adapter = build_fusion(FusionConfig(k=2, width=16, depth=2, heads=2), {"text": 8, "audio": 4}, 12, 1.0)
    rest, gates = param_groups(adapter, TrainConfig(gate_lr_mult=25.0, weight_decay=0.1))
    assert len(gates["params"]) == 4 and gates["lr_mult"] == 25.0 and gates["weight_decay"] == 0.0
    assert rest["lr_mult"] == 1.0 and rest["weight_decay"] == 0.1
    assert len(rest["params"]) + 4 == len(list(adapter.parameters()))
    weighted = build_fusion(FusionConfig(type="weighted", k=2, width=16), {"text": 8}, 12, 1.0)
    assert len(param_groups(weighted, TrainConfig())) == 1  # no gates, one group


def test_epoch_batches_cover_every_example_once_and_group_similar_lengths():
    from agent.training.distill import epoch_batches

    lengths = [100 if j % 2 else 500 for j in range(40)]  # soft and soft+card prompts, interleaved
    batches = epoch_batches(lengths, 4, seed=0, epoch=0)
    assert sorted(j for b in batches for j in b) == list(range(40)) and len(batches) == 10
    assert sum(len({lengths[j] for j in b}) > 1 for b in batches) <= 1  # at most the batch at a bucket's seam mixes
    assert batches == epoch_batches(lengths, 4, seed=0, epoch=0)
    assert batches != epoch_batches(lengths, 4, seed=0, epoch=1)


def test_student_mode_both_sees_every_reply_without_and_with_the_card(dataset, tmp_path, tiny_llama, config):
    cfg = train_config(dataset, tmp_path, student_mode="both")
    teacher, _, students, _ = prepared(dataset, tmp_path, tiny_llama, config, cfg)
    n = len(teacher.replies)
    assert len(students) == 2 * n
    for soft, card in zip(students[:n], students[n:]):
        assert soft.reply is card.reply and soft.persona == card.persona
        assert len(card.prompt_ids) > len(soft.prompt_ids)
        assert sorted(i for i in soft.prompt_ids if i < 0) == sorted(i for i in card.prompt_ids if i < 0)
