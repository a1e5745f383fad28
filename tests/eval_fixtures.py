"""Small real things for the evaluation, generation and export tests: a byte-level BPE tokenizer
trained here with the project's special tokens (last ids, contract order) and tiny GPTs."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch



@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny matrices gain nothing from a second thread, and a thread that waits for a busy core
    (other jobs on the machine) costs several times the work; restored for other test files."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ANIMALS = ["cat", "dog", "horse", "sheep", "goat", "mouse", "bird", "fish"]
SOUNDS = {"cat": "meows", "dog": "barks", "horse": "neighs", "sheep": "bleats", "goat": "bleats",
          "mouse": "squeaks", "bird": "sings", "fish": "swims"}


def pattern_text(n: int = 400, seed: int = 0) -> list[str]:
    """Documents with a fixed pattern a tiny model learns in a few hundred steps."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        animal = rng.choice(ANIMALS)
        docs.append(f"the {animal} {SOUNDS[animal]} loudly. the sky is blue and the grass is green.")
    return docs


def train_tokenizer(path: Path, texts: list[str], vocab_size: int = 300) -> Path:
    """The project's own tokenizer (rustbpe's trainer, HF format), small, on the given texts."""
    from pipeline.tokenizer import train_bpe

    train_bpe(texts, vocab_size).save(str(path))
    return path


def tiny_gpt(vocab_size: int, seed: int = 0, **overrides):
    from model.gpt import GPT, GPTConfig

    torch.manual_seed(seed)
    fields = dict(vocab_size=vocab_size, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, block_size=64)
    fields.update(overrides)
    return GPT(GPTConfig(**fields))


def train_on(model, tokenizer, texts: list[str], steps: int = 200, seq_len: int = 48, batch_size: int = 16,
             lr: float = 3e-3, seed: int = 0):
    """A few hundred AdamW steps on the documents, each followed by <|endoftext|>."""
    eot = tokenizer.token_to_id("<|endoftext|>")
    stream = []
    for text in texts:
        stream.extend(tokenizer.encode(text).ids + [eot])
    data = torch.tensor(stream)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
        x = torch.stack([data[s:s + seq_len] for s in starts])
        y = torch.stack([data[s + 1:s + seq_len + 1] for s in starts])
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss.detach())


def write_checkpoint(folder: Path, model, tokenizer_path: Path, step: int = 0, data: list | None = None) -> Path:
    """A checkpoint folder as model/checkpoint.py reads it: model.safetensors, config.json, tokenizer.json."""
    import json
    import shutil
    from dataclasses import asdict

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    shutil.copyfile(tokenizer_path, folder / "tokenizer.json")
    meta = {"model": asdict(model.config), "step": step, "tokens_seen": 0, "data": {"files": [str(p) for p in data or []]}}
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


def write_token_parts(folder: Path, tokenizer_path: Path, docs: list[tuple[str, str]], row_group_size: int = 16) -> Path:
    """A token artifact in the contract's schema from (split, text) documents."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, (split, text) in enumerate(docs):
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        rows.append({"id": f"doc-{n}", "split": split, "n_tokens": len(ids), "tokens": ids, "text": text})
    schema = pa.schema([("id", pa.string()), ("split", pa.string()), ("n_tokens", pa.int32()),
                        ("tokens", pa.list_(pa.uint16()))])
    table = pa.Table.from_pylist([{k: r[k] for k in schema.names} for r in rows], schema=schema)
    pq.write_table(table, folder / "part-00000.parquet", row_group_size=row_group_size)
    shutil.copyfile(tokenizer_path, folder / "tokenizer.json")
    return folder


def uniform_model(vocab_size: int, **overrides):
    """A GPT whose logits are exactly zero everywhere: every token has probability 1/vocab_size."""
    model = tiny_gpt(vocab_size, **overrides)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    return model.eval()
