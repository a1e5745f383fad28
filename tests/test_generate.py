"""Generation: the KV cache changes nothing, sampling is seeded, stops stop, text streams whole characters."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import one_torch_thread, pattern_text, tiny_gpt, train_tokenizer, write_checkpoint  # noqa: E402,F401

from model.generate import TextStream, generate_text, generate_tokens, next_token  # noqa: E402

REPO = Path(__file__).resolve().parent.parent



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    tokenizer_path = train_tokenizer(root / "tokenizer.json", pattern_text(200))
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    model = tiny_gpt(tokenizer.get_vocab_size(), seed=2)
    with torch.no_grad():  # sharper than init's near-uniform logits, so greedy choices are clear-cut
        model.lm_head.weight.mul_(30)
    return {"tokenizer": tokenizer, "tokenizer_path": tokenizer_path, "model": model.eval(), "root": root}


@pytest.mark.parametrize("n_kv_head", [4, 1])
def test_greedy_with_cache_equals_without(setup, n_kv_head):
    model = tiny_gpt(setup["tokenizer"].get_vocab_size(), seed=3, n_kv_head=n_kv_head)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    prompt = setup["tokenizer"].encode("the dog barks").ids
    n = model.config.block_size - len(prompt)  # up to a full block
    cached = list(generate_tokens(model, prompt, n, temperature=0, use_cache=True))
    uncached = list(generate_tokens(model, prompt, n, temperature=0, use_cache=False))
    assert len(cached) == n and cached == uncached
    assert len(set(cached)) > 3  # not one token repeated: the comparison means something


def test_sampling_is_seeded_and_top_k_1_is_greedy(setup):
    model, prompt = setup["model"], setup["tokenizer"].encode("the cat").ids
    sample = lambda **kw: list(generate_tokens(model, prompt, 30, **kw))  # noqa: E731
    assert sample(temperature=1.0, seed=5) == sample(temperature=1.0, seed=5)
    assert sample(temperature=1.0, seed=5) != sample(temperature=1.0, seed=6)
    assert sample(temperature=1.0, top_k=1, seed=7) == sample(temperature=0)
    assert sample(temperature=1.0, top_p=1e-6, seed=7) == sample(temperature=0)  # top-p keeps the top token only


def test_top_k_and_top_p_restrict_the_candidates():
    logits = torch.tensor([5.0, 4.0, 3.0, 0.0, -1.0])
    gen = torch.Generator().manual_seed(0)
    assert {next_token(logits, 1.0, 2, 1.0, gen) for _ in range(200)} == {0, 1}
    # probabilities ≈ .66 .24 .09 ...: top_p=0.8 keeps the first two
    assert {next_token(logits, 1.0, 0, 0.8, gen) for _ in range(200)} == {0, 1}
    assert len({next_token(logits, 1.0, 0, 1.0, gen) for _ in range(400)}) >= 4


def test_a_stop_token_ends_generation(setup):
    model, prompt = setup["model"], setup["tokenizer"].encode("the").ids
    full = list(generate_tokens(model, prompt, 40, temperature=0))
    stop = full[10]
    stopped = list(generate_tokens(model, prompt, 40, temperature=0, stop_ids=[stop]))
    assert stopped == full[:full.index(stop) + 1]


def test_text_stream_never_splits_a_character(setup):
    tok = setup["tokenizer"]
    text = "héllo wörld — 日本語 ok"
    ids = tok.encode(text).ids
    assert len(ids) > len(text.split())  # multi-byte characters span several byte tokens
    stream = TextStream(tok)
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    k = next(k for k in range(1, len(ids)) if tok.decode(ids[:k]).endswith("\ufffd"))
    cut = TextStream(tok)  # generation ending inside a character: the rest comes out at the end
    assert "".join(cut.push(i) for i in ids[:k]) + cut.flush() == tok.decode(ids[:k])


def test_generate_command_streams_greedy_text(setup, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "ckpt", setup["model"], setup["tokenizer_path"])
    expected = generate_text(setup["model"], setup["tokenizer"], "the dog", 12, temperature=0)
    args = [sys.executable, "-m", "flows.cli", "generate", str(checkpoint), "-t", "0", "-n", "12"]
    from_arg = subprocess.run(args + ["the dog"], capture_output=True, cwd=REPO, timeout=240)
    assert from_arg.returncode == 0, from_arg.stderr
    assert from_arg.stdout == ("the dog" + expected + "\n").encode()  # an untrained model: any bytes
    from_stdin = subprocess.run(args, input=b"the dog", capture_output=True, cwd=REPO, timeout=240)
    assert from_stdin.stdout == from_arg.stdout
    from typer.testing import CliRunner

    from flows.cli import app

    missing = CliRunner().invoke(app, ["generate", str(tmp_path / "nope"), "x"])
    assert missing.exit_code == 2 and missing.stderr == f"error: {tmp_path / 'nope'}: no such file or folder\n"
