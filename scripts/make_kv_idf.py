"""Builds agent/embedding/kv_idf.json: how many of the training personas' system turns hold each token, for
embedding.conditioning=kv's tf-idf selection of a persona's KV cells (agent/embedding/kv_cells.py).

Counted over the train split of data/ (never the held-out personas), each card's system turn rendered as chat
renders it, with the tokenizer of the LM given (default: the embedded GGUF's). Deterministic.

    python3 scripts/make_kv_idf.py                       # the embedded LM -> agent/embedding/kv_idf.json
    python3 scripts/make_kv_idf.py --lm path/to/model.gguf --out my_idf.json   # then -s embedding.kv_idf=my_idf.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    from agent.config import LMConfig, read_yaml_mapping
    from agent.embedding.kv_cells import TfIdf, tokenizer_key
    from agent.embedding.persona_kv import PACKAGED_IDF, system_turn_ids
    from agent.persona.store import load_persona

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", default=LMConfig().name_or_path, help="a .gguf file or pkg: reference (its tokenizer)")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=PACKAGED_IDF)
    parser.add_argument("--user", default="User")
    args = parser.parse_args()
    from agent.chat.backends import local_tokenizer

    began = time.perf_counter()
    tokenizer, _ = local_tokenizer(args.lm, Path("/tmp/personae-kv-idf"))
    train = read_yaml_mapping(args.data / "splits.yaml", "training data")["personas"]["train"]
    ids = []
    for i, slug in enumerate(train, 1):
        ids.append(system_turn_ids(tokenizer, load_persona(args.data / "personas" / slug).card, args.user))
        print(f"\r{i}/{len(train)} cards", end="", file=sys.stderr)
    print(file=sys.stderr)
    tfidf = TfIdf.from_ids(ids)
    tfidf.save(args.out, tokenizer_key=tokenizer_key(tokenizer))
    print(f"{args.out}: {len(tfidf.df)} tokens over {tfidf.n} cards ({time.perf_counter() - began:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
