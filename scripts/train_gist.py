"""Trains learned gist cells (agent/embedding/gist.py) on the scaled personas, teacher-forced (issue 26, item 2).

    python3 scripts/make_training_data.py --scale 2000 --media none        # data/scaled, once
    python3 scripts/train_gist.py --personas 96 --minutes 30 --out /tmp/exp/gist.safetensors
    python3 benchmarks/validation_identification.py kv40u kvgist:/tmp/exp/gist.safetensors --threads 1

A script, not a `personae train` mode: that command is the generate-a-teacher-then-distill pipeline over data/
personas with the soft prompt in the input; this one reads the scaled set, never generates, and its student is
a KV prefix. Trainable: the fusion adapter (text features only; the scaled set has no voices), the reader
LoRA (on for the gist forward only) and the gist value gate; the LM is frozen. Cells: KVSettings(m=40), header
name, one cell per token id (validation's kv40u). Writes OUT.step0.safetensors before the first update, then
OUT every --save-every steps and at the end. Progress to stderr: the card passes, step 0, then every --every
steps the means since the last line: loss, KL, CE, identification loss, in-batch accuracy (chance 1/batch),
persona dependence (nats per line), mean |tanh(gate)|, seconds per step. At --check-step (100) it stops, saying
so, when neither the dependence nor the accuracy has moved.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scaled", type=Path, default=ROOT / "data" / "scaled")
    parser.add_argument("--personas", type=int, default=96, help="scaled personas used (the first N)")
    parser.add_argument("--lines", type=int, default=4, help="target lines kept per persona")
    parser.add_argument("--line-tokens", type=int, default=20, help="tokens of each line scored")
    parser.add_argument("--batch", type=int, default=4, help="personas per step (one line each); chance 1/batch")
    parser.add_argument("--k", type=int, default=8, help="gist cells")
    parser.add_argument("--reader-rank", type=int, default=8)
    parser.add_argument("--reader-targets", default="q_proj,k_proj,v_proj,o_proj")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW rate of the adapter and the LoRA")
    parser.add_argument("--gate-lr", type=float, default=1e-2, help="AdamW rate of the gist value gate")
    parser.add_argument("--kl", type=float, default=1.0)
    parser.add_argument("--ce", type=float, default=1.0)
    parser.add_argument("--ident", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=32, help="teacher log-probs kept per token")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-time cap, card passes included")
    parser.add_argument("--max-steps", type=int, default=0, help="0: until --minutes")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--check-step", type=int, default=100)
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, help="card passes saved here, and read back when they match")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    began = time.perf_counter()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from agent.agent import Agent
    from agent.config import load_config
    from agent.embedding.config import FusionConfig
    from agent.embedding.fusion import embedding_norm
    from agent.embedding.gist import new_gist, save_gist
    from agent.embedding.persona_kv import KVSettings, load_tfidf
    from agent.embedding.reader import ReaderConfig, add_reader
    from agent.training.batching import pad_id
    from agent.training.data import load_scaled
    from agent.training.gist import LossWeights, Rests, prepare, step_loss

    config = load_config(None, [f"lm.threads={args.threads}"])
    lm = Agent(config).lm
    model, tokenizer, user = lm.model, lm.tokenizer, config.chat.user_name
    text_layer = config.encoder.text_layer
    settings = KVSettings(m=40)
    pad = pad_id(tokenizer)
    key = repr((args.scaled.resolve(), args.personas, args.lines, args.line_tokens, args.top_k, settings,
                text_layer, lm.source))
    personas = None
    if args.cache and args.cache.is_file():
        saved = torch.load(args.cache, weights_only=False)
        personas = saved["personas"] if saved.get("key") == key else None
        log(f"card passes: {'read from' if personas else 'ignored (other settings):'} {args.cache}")
    if personas is None:
        tfidf = load_tfidf("", tokenizer, [])
        personas = []
        for i, scaled in enumerate(load_scaled(args.scaled, limit=args.personas), 1):
            personas.append(prepare(model, tokenizer, scaled, tfidf, settings, user=user, text_layer=text_layer,
                                    lines=args.lines, line_tokens=args.line_tokens, top_k=args.top_k, pad=pad))
            if i % 8 == 0 or i == args.personas:
                log(f"card pass {i}/{args.personas}: {len(personas[-1].read.features)} system-turn tokens, "
                    f"{len(personas[-1].targets)} lines ({time.perf_counter() - began:.0f} s)")
        if args.cache:
            torch.save({"key": key, "personas": personas}, args.cache)
    personas = [p for p in personas if p.targets]
    log(f"{len(personas)} personas with target lines, {sum(len(p.targets) for p in personas)} lines; "
        f"cells {statistics.mean(p.read.cells.get_seq_length() for p in personas):.1f} per persona + {args.k} gist")

    reader = ReaderConfig(rank=args.reader_rank, alpha=2.0 * args.reader_rank,
                          targets=tuple(args.reader_targets.split(",")))
    lora = add_reader(model, reader)
    gist = new_gist(FusionConfig(k=args.k, harmless_start="outputs"), model, embedding_norm(model))
    optimizer = torch.optim.AdamW([
        {"params": list(gist.adapter.parameters()) + lora, "lr": args.lr},
        {"params": [gist.gate], "lr": args.gate_lr}], weight_decay=0.0)
    weights = LossWeights(args.kl, args.ce, args.ident)
    rests = Rests(tokenizer, user)
    extra = {"trained": f"scripts/train_gist.py {' '.join(sys.argv[1:])}", "kv_cells": str(settings.m)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_gist(args.out.with_suffix(".step0.safetensors"), gist, model, reader, text_layer, extra)
    log(f"adapter {sum(p.numel() for p in gist.adapter.parameters()) / 1e6:.2f} M, LoRA "
        f"{sum(p.numel() for p in lora) / 1e6:.2f} M, gate {gist.gate.numel()} parameters; chance {1 / args.batch:.3f}")

    rng = random.Random(args.seed)
    order, window, history = [], [], []
    step, deadline = 0, began + 60 * args.minutes
    while (not args.max_steps or step < args.max_steps) and time.perf_counter() < deadline:
        if len(order) < args.batch:
            order += rng.sample(range(len(personas)), len(personas))
        batch = [personas[i] for i in order[:args.batch]]
        del order[:args.batch]
        chosen = [rng.choice(p.targets) for p in batch]
        t0 = time.perf_counter()
        loss, stats = step_loss(model, gist, batch, chosen, rests, weights, pad)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        stats["seconds"] = time.perf_counter() - t0
        stats["gate"] = gist.gate.detach().tanh().abs().mean().item()
        step += 1
        window.append(stats)
        if step == 1:
            log(f"step 0: " + _line(window))  # the first batch scored before any update
            history.append((0, window[:]))
            window = []
        elif step % args.every == 0:
            log(f"step {step}: " + _line(window) + f" ({time.perf_counter() - began:.0f} s)")
            history.append((step, window))
            window = []
            if step == args.check_step and _stalled(history, 1 / args.batch):
                log(f"step {step}: neither the persona dependence nor the in-batch accuracy moved; stopping")
                break
        if step % args.save_every == 0:
            save_gist(args.out, gist, model, reader, text_layer, {**extra, "steps": str(step)})
    if window:
        log(f"step {step}: " + _line(window))
    save_gist(args.out, gist, model, reader, text_layer, {**extra, "steps": str(step)})
    log(f"{step} steps, {time.perf_counter() - began:.0f} s; wrote {args.out}")
    return 0


def _line(window: list[dict]) -> str:
    mean = {k: statistics.mean(s[k] for s in window) for k in window[0]}
    return (f"loss {mean['loss']:.3f} (kl {mean['kl']:.3f} ce {mean['ce']:.3f} id {mean['id']:.3f}) "
            f"acc {mean['acc']:.3f} dependence {mean['dependence']:+.3f} gate {mean['gate']:.4f} "
            f"{mean['seconds']:.1f} s/step")


def _stalled(history: list, chance: float) -> bool:
    """True when the last window's dependence is not above step 0's and its accuracy not above chance."""
    def mean(window, key):
        return statistics.mean(s[key] for s in window)
    first, last = history[0][1], history[-1][1]
    return mean(last, "dependence") <= mean(first, "dependence") and mean(last, "acc") <= chance


if __name__ == "__main__":
    sys.exit(main())
