"""Evaluating a GPT: held-out loss and bits per byte, multiple-choice and cloze benchmarks.

Scoring follows lm-evaluation-harness (lm_eval/models/huggingface.py and lm_eval/api/task.py), so
its numbers and ours on the same file agree (benchmarks/lm_eval_parity.py):
- a (context, continuation) pair is tokenised as lm-eval does: trailing spaces of the context move
  to the continuation, whole = encode(context + continuation), context = encode(context), and the
  continuation's tokens are whole[len(context):]. An empty context is replaced by <|endoftext|>.
  Sequences longer than block_size + 1 lose tokens on the left.
- the log-likelihood of a continuation is the sum of its tokens' log-probabilities; `greedy` says
  whether every one of them was the argmax (LAMBADA's accuracy).
- multiple choice: acc = argmax of the log-likelihoods; acc_norm = argmax of log-likelihood / the
  choice's length in characters (lm-eval's completion_len, the choice without its delimiter);
  acc_bytes = the same per UTF-8 byte (lm-eval's acc_bytes; equal to acc_norm on ASCII text).
  The standard error of a mean of 0/1 outcomes is sqrt(p(1-p)/(n-1)), lm-eval's mean_stderr.

Batching: requests are sorted by length (longest first), so a batch holds sequences of (nearly)
equal length, and padded on the right. Attention is causal, so padding after a sequence cannot
change its logits; only the continuation's positions go through the LM head. The tests check that
batched scores equal scores computed one request at a time.

Bits per byte: total cross-entropy in nats of the target tokens / ln 2 / their UTF-8 bytes, so
models with different tokenizers compare. Special tokens (the document separator) are targets of
the loss but count neither nats nor bytes in bits per byte, as nanochat does. The unigram
baseline (token frequencies of the train split, add-one smoothed) is measured the same way. The
split is read as the loader streams it (each document followed by <|endoftext|>), with one
separator in front so the first document is predicted like the others and every byte of the
split's text is counted; windows of block_size tokens, not overlapping.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model.benchmarks import TARGET_DELIMITER, Benchmark, ChoiceItem, ClozeItem

EOT_TOKEN = "<|endoftext|>"
Request = tuple[list[int], list[int]]  # (context tokens, continuation tokens)


# ----------------------------------------------------------------------------------- tokenising

def encode_pair(tokenizer, context: str, continuation: str, prefix_id: int) -> Request:
    """lm-eval's _encode_pair for causal models (see the module doc)."""
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    if not context:
        continuation_ids = encode(continuation)
        if continuation_ids and continuation_ids[0] == prefix_id:
            return continuation_ids[:1], continuation_ids[1:]
        return [prefix_id], continuation_ids
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(context + continuation)
    context_ids = encode(context)
    return context_ids, whole[len(context_ids):]


# ------------------------------------------------------------------------------------- scoring

def final_hidden(model, idx: torch.Tensor) -> torch.Tensor:
    """The model's last hidden states (after the final norm), i.e. forward() without the LM head."""
    T = idx.size(1)
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    x = model.embed_tokens(idx)
    for i, block in enumerate(model.layers):
        x = block(x, cos, sin, None, i)
    return model.norm(x)


def head_weight(model) -> torch.Tensor:
    return model.embed_tokens.weight if model.lm_head is None else model.lm_head.weight


@torch.inference_mode()
def loglikelihoods(model, requests: Sequence[Request], batch_size: int = 32, pad_id: int = 0,
                   progress: Callable[[int], None] | None = None) -> list[tuple[float, bool]]:
    """(sum of log-probabilities of the continuation, all its tokens greedy) for each request."""
    model.eval()
    device = head_weight(model).device
    max_len = model.config.block_size
    prepared = []  # (input tokens, number of continuation tokens, continuation tokens)
    for context, continuation in requests:
        if not continuation:
            raise ValueError("a continuation with no tokens cannot be scored")
        whole = (list(context) + list(continuation))[-(max_len + 1):]
        n_cont = min(len(continuation), len(whole) - 1)
        prepared.append((whole[:-1], n_cont, whole[-n_cont:]))
    order = sorted(range(len(prepared)), key=lambda i: (-len(prepared[i][0]), i))
    results: list[tuple[float, bool] | None] = [None] * len(prepared)
    weight = head_weight(model)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = len(prepared[batch[0]][0])  # the longest of the batch: sorted longest first
        idx = torch.full((len(batch), width), pad_id, dtype=torch.long)
        rows, positions, targets = [], [], []
        for row, i in enumerate(batch):
            inputs, n_cont, cont = prepared[i]
            idx[row, :len(inputs)] = torch.tensor(inputs)
            rows.extend([row] * n_cont)
            positions.extend(range(len(inputs) - n_cont, len(inputs)))
            targets.extend(cont)
        hidden = final_hidden(model, idx.to(device))
        picked = hidden[torch.tensor(rows, device=device), torch.tensor(positions, device=device)]  # (Σ n_cont, n_embd)
        logprobs = F.log_softmax(F.linear(picked, weight).float(), dim=-1)
        target = torch.tensor(targets, device=device)
        token_lp = logprobs.gather(1, target[:, None])[:, 0].cpu().numpy().astype(np.float64)
        greedy = (logprobs.argmax(-1) == target).cpu().numpy()
        offset = 0
        for i in batch:
            n = prepared[i][1]
            results[i] = (float(token_lp[offset:offset + n].sum()), bool(greedy[offset:offset + n].all()))
            offset += n
        if progress is not None:
            progress(len(batch))
    return results  # type: ignore[return-value]


def mean_stderr(values: Sequence[float]) -> float:
    """lm-eval's mean_stderr: the sample standard deviation (n-1) over sqrt(n)."""
    n = len(values)
    if n < 2:
        return float("nan")
    return float(np.std(np.asarray(values, dtype=np.float64), ddof=1) / math.sqrt(n))


@dataclass
class BenchmarkResult:
    metrics: dict
    per_item: list[dict]


def score_multiple_choice(model, tokenizer, items: Sequence[ChoiceItem], batch_size: int = 32,
                          progress=None) -> BenchmarkResult:
    prefix_id = tokenizer.token_to_id(EOT_TOKEN)
    requests = [encode_pair(tokenizer, item.context, TARGET_DELIMITER + choice, prefix_id)
                for item in items for choice in item.choices]
    scores = loglikelihoods(model, requests, batch_size, pad_id=prefix_id, progress=progress)
    acc, acc_norm, acc_bytes, per_item = [], [], [], []
    at = 0
    for item in items:
        lls = np.array([s for s, _ in scores[at:at + len(item.choices)]])
        at += len(item.choices)
        chars = np.array([float(len(c)) for c in item.choices])
        nbytes = np.array([float(len(c.encode("utf-8"))) for c in item.choices])
        pred, pred_norm, pred_bytes = (int(np.argmax(lls)), int(np.argmax(lls / chars)), int(np.argmax(lls / nbytes)))
        acc.append(float(pred == item.label))
        acc_norm.append(float(pred_norm == item.label))
        acc_bytes.append(float(pred_bytes == item.label))
        per_item.append({"loglikelihoods": lls.tolist(), "pred": pred, "pred_norm": pred_norm, "label": item.label})
    chance = float(np.mean([1.0 / len(item.choices) for item in items]))
    metrics = {"items": len(items), "acc": float(np.mean(acc)), "acc_stderr": mean_stderr(acc),
               "acc_norm": float(np.mean(acc_norm)), "acc_norm_stderr": mean_stderr(acc_norm),
               "acc_bytes": float(np.mean(acc_bytes)), "acc_bytes_stderr": mean_stderr(acc_bytes),
               "chance": chance}
    return BenchmarkResult(metrics, per_item)


def score_cloze(model, tokenizer, items: Sequence[ClozeItem], batch_size: int = 32, progress=None) -> BenchmarkResult:
    """LAMBADA: accuracy = the whole target word is the greedy prediction; perplexity = exp(-mean ll)."""
    prefix_id = tokenizer.token_to_id(EOT_TOKEN)
    requests = [encode_pair(tokenizer, item.context, item.target, prefix_id) for item in items]
    scores = loglikelihoods(model, requests, batch_size, pad_id=prefix_id, progress=progress)
    lls = [s for s, _ in scores]
    acc = [float(g) for _, g in scores]
    metrics = {"items": len(items), "acc": float(np.mean(acc)), "acc_stderr": mean_stderr(acc),
               "perplexity": float(math.exp(-np.mean(lls)))}
    return BenchmarkResult(metrics, [{"loglikelihood": s, "greedy": g} for s, g in scores])


def score_benchmark(model, tokenizer, benchmark: Benchmark, batch_size: int = 32, show_progress: bool = True) -> dict:
    n_requests = sum(len(i.choices) for i in benchmark.items) if benchmark.kind == "multiple_choice" else len(benchmark.items)
    bar = _bar(n_requests, f"evaluate: {benchmark.name}", "req", show_progress)
    scorer = score_multiple_choice if benchmark.kind == "multiple_choice" else score_cloze
    try:
        result = scorer(model, tokenizer, benchmark.items, batch_size, progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    return {"name": benchmark.name, "path": str(benchmark.path), "format": benchmark.format,
            "kind": benchmark.kind, **result.metrics}


def _bar(total: int, desc: str, unit: str, show: bool):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10.0)


# ----------------------------------------------------------------------------- loss and bits/byte

def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte, inverted."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_byte_lengths(tokenizer) -> np.ndarray:
    """UTF-8 bytes each token stands for (0 for special tokens), for a byte-level BPE tokenizer."""
    decoder = _byte_decoder()
    vocab_size = tokenizer.get_vocab_size()
    special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    lengths = np.zeros(vocab_size, dtype=np.int64)
    for i in range(vocab_size):
        if i in special:
            continue
        piece = tokenizer.id_to_token(i)
        if piece is None:
            continue
        if all(c in decoder for c in piece):
            lengths[i] = len(piece)  # one character per byte
        else:  # not byte-level (a user's tokenizer): its decoded text
            lengths[i] = len(tokenizer.decode([i]).encode("utf-8"))
    return lengths


def read_split_tokens(files: Sequence[Path], split: str, eot_id: int, max_tokens: int = 0) -> np.ndarray:
    """The documents of one split, each followed by the separator, as one int64 array (the
    loader's stream for that split, in stored order); at most max_tokens + 1 tokens if > 0."""
    import pyarrow.parquet as pq

    from model.data import read_unit_tokens

    pieces, total = [], 0
    for path in files:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            tokens, _, _ = read_unit_tokens(parquet, group, split, eot_id, path)
            pieces.append(tokens)
            total += len(tokens)
            if max_tokens and total > max_tokens:
                return np.concatenate(pieces)[:max_tokens + 1]
    return np.concatenate(pieces) if pieces else np.empty(0, np.int64)


def unigram_logprobs(files: Sequence[Path], eot_id: int, vocab_size: int) -> np.ndarray:
    """log p(token) from the train split's counts (separators included), add-one smoothed."""
    import pyarrow.parquet as pq

    from model.data import read_unit_tokens

    counts = np.zeros(vocab_size, dtype=np.float64)
    for path in files:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            tokens, _, _ = read_unit_tokens(parquet, group, "train", eot_id, path)
            counts += np.bincount(tokens, minlength=vocab_size)[:vocab_size]
    counts += 1.0
    return np.log(counts / counts.sum())


@torch.inference_mode()
def token_losses(model, tokens: np.ndarray, batch_size: int = 8, progress=None) -> np.ndarray:
    """Cross-entropy (nats) of every token but the first given the ones before it, in windows of
    block_size (non-overlapping, as the loader packs validation batches)."""
    model.eval()
    device = head_weight(model).device
    T = model.config.block_size
    n_targets = len(tokens) - 1
    out = np.zeros(max(n_targets, 0), dtype=np.float64)
    starts = list(range(0, n_targets, T))
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        width = min(T, n_targets - chunk[0])
        x = torch.zeros((len(chunk), width), dtype=torch.long)
        y = torch.full((len(chunk), width), -100, dtype=torch.long)
        for row, s in enumerate(chunk):
            n = min(T, n_targets - s)
            x[row, :n] = torch.from_numpy(tokens[s:s + n])
            y[row, :n] = torch.from_numpy(tokens[s + 1:s + 1 + n])
        logits, _ = model(x.to(device))
        losses = F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(), ignore_index=-100,
                                 reduction="none").view(len(chunk), width).cpu().numpy()
        for row, s in enumerate(chunk):
            n = min(T, n_targets - s)
            out[s:s + n] = losses[row, :n]
        if progress is not None:
            progress(int(sum(min(T, n_targets - s) for s in chunk)))
    return out


def loss_metrics(target_tokens: np.ndarray, nats: np.ndarray, byte_lengths: np.ndarray) -> dict:
    """loss, perplexity and bits per byte of per-token losses `nats` for `target_tokens`."""
    counted = byte_lengths[target_tokens] > 0
    n_bytes = int(byte_lengths[target_tokens].sum())
    loss = float(nats.mean()) if len(nats) else float("nan")
    return {"loss": loss, "perplexity": float(math.exp(loss)) if len(nats) else float("nan"),
            "bits_per_byte": float(nats[counted].sum() / math.log(2) / n_bytes) if n_bytes else float("nan"),
            "tokens": int(len(nats)), "bpb_tokens": int(counted.sum()), "bytes": n_bytes}


def evaluate_held_out(model, files: Sequence[Path], tokenizer, split: str = "val", max_tokens: int = 0,
                      batch_size: int = 8, show_progress: bool = True) -> dict:
    """Loss, perplexity and bits per byte of the model on a split of token parts, with the unigram
    baseline (train-split frequencies) on the same tokens beside them."""
    eot_id = tokenizer.token_to_id(EOT_TOKEN)
    # a separator first, so the first document is read as every other one (after <|endoftext|>) and
    # every byte of the split's text is a target
    tokens = np.concatenate([[eot_id], read_split_tokens(files, split, eot_id, max_tokens)])
    if len(tokens) < 3:
        return {"split": split, "tokens": 0, "note": f"no {split} tokens in the input"}
    byte_lengths = token_byte_lengths(tokenizer)
    bar = _bar(len(tokens) - 1, f"evaluate: {split} loss", "tok", show_progress)
    try:
        nats = token_losses(model, tokens, batch_size, progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    targets = tokens[1:]
    result = {"split": split, **loss_metrics(targets, nats, byte_lengths)}
    unigram = unigram_logprobs(files, eot_id, tokenizer.get_vocab_size())
    result["unigram"] = loss_metrics(targets, -unigram[targets], byte_lengths)
    return result
