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

import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model.benchmarks import TARGET_DELIMITER, Benchmark, ChoiceItem, ClozeItem
from model.data import EOT_TOKEN

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

@torch.inference_mode()
def loglikelihoods(model, requests: Sequence[Request], batch_size: int = 32, pad_id: int = 0,
                   progress: Callable[[int], None] | None = None) -> list[tuple[float, bool]]:
    """(sum of log-probabilities of the continuation, all its tokens greedy) for each request."""
    model.eval()
    device = model.head_weight().device
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
    weight = model.head_weight()
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
        hidden = model.hidden_states(idx.to(device))
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
    per_item = []
    at = 0
    for item in items:
        lls = np.array([s for s, _ in scores[at:at + len(item.choices)]])
        at += len(item.choices)
        chars = np.array([float(len(c)) for c in item.choices])
        nbytes = np.array([float(len(c.encode("utf-8"))) for c in item.choices])
        pred, pred_norm, pred_bytes = (int(np.argmax(lls)), int(np.argmax(lls / chars)), int(np.argmax(lls / nbytes)))
        per_item.append({"loglikelihoods": lls.tolist(), "pred": pred, "pred_norm": pred_norm, "pred_bytes": pred_bytes,
                         "label": item.label, "choices": len(item.choices), "subject": item.subject})
    return BenchmarkResult(choice_metrics(per_item), per_item)


def choice_metrics(per_item: Sequence[dict]) -> dict:
    """acc, acc_norm, acc_bytes with standard errors over items; with subjects (MMLU), acc per
    subject and its macro average (mean of the subjects) beside the micro one (acc: all items)."""
    outcome = lambda key: [float(r[key] == r["label"]) for r in per_item]  # noqa: E731
    acc, acc_norm, acc_bytes = outcome("pred"), outcome("pred_norm"), outcome("pred_bytes")
    metrics = {"items": len(per_item), "acc": _mean(acc), "acc_stderr": mean_stderr(acc),
               "acc_norm": _mean(acc_norm), "acc_norm_stderr": mean_stderr(acc_norm),
               "acc_bytes": _mean(acc_bytes), "acc_bytes_stderr": mean_stderr(acc_bytes),
               "chance": _mean([1.0 / r["choices"] for r in per_item])}
    subjects = sorted({r["subject"] for r in per_item if r.get("subject")})
    if subjects:
        by_subject = {}
        for subject in subjects:
            hits = [a for a, r in zip(acc, per_item) if r.get("subject") == subject]
            by_subject[subject] = {"items": len(hits), "acc": _mean(hits), "acc_stderr": mean_stderr(hits)}
        metrics["acc_macro"] = _mean([v["acc"] for v in by_subject.values()])
        metrics["acc_micro"] = metrics["acc"]
        metrics["subjects"] = by_subject
    return metrics


def score_cloze(model, tokenizer, items: Sequence[ClozeItem], batch_size: int = 32, progress=None) -> BenchmarkResult:
    """LAMBADA: accuracy = the whole target word is the greedy prediction; perplexity = exp(-mean ll)."""
    prefix_id = tokenizer.token_to_id(EOT_TOKEN)
    requests = [encode_pair(tokenizer, item.context, item.target, prefix_id) for item in items]
    scores = loglikelihoods(model, requests, batch_size, pad_id=prefix_id, progress=progress)
    per_item = [{"loglikelihood": s, "greedy": g} for s, g in scores]
    return BenchmarkResult(cloze_metrics(per_item), per_item)


def cloze_metrics(per_item: Sequence[dict]) -> dict:
    acc = [float(r["greedy"]) for r in per_item]
    lls = [r["loglikelihood"] for r in per_item]
    return {"items": len(per_item), "acc": _mean(acc), "acc_stderr": mean_stderr(acc),
            "perplexity": float(math.exp(-np.mean(lls))) if lls else float("nan")}


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def score_benchmark(model, tokenizer, benchmark: Benchmark, batch_size: int = 32, show_progress: bool = True,
                    contaminated: Sequence[bool] | None = None, per_item: bool = False) -> dict:
    """The benchmark's metrics, the file it was made on (path, sha256); with `contaminated` (one
    flag per item) also how many items were flagged and the metrics of the others ("clean");
    per_item: each item's 0/1 outcome under "per_item" (for paired comparisons of two models)."""
    n_requests = sum(len(i.choices) for i in benchmark.items) if benchmark.kind == "multiple_choice" else len(benchmark.items)
    bar = _bar(n_requests, f"evaluate: {benchmark.name}", "req", show_progress)
    scorer = score_multiple_choice if benchmark.kind == "multiple_choice" else score_cloze
    try:
        result = scorer(model, tokenizer, benchmark.items, batch_size, progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    out = {"name": benchmark.name, "path": str(benchmark.path), "sha256": benchmark.sha256, "format": benchmark.format,
           "kind": benchmark.kind, **result.metrics}
    if per_item and benchmark.kind == "multiple_choice":
        out["per_item"] = {key: [int(r[pred] == r["label"]) for r in result.per_item]
                           for key, pred in (("acc", "pred"), ("acc_norm", "pred_norm"))}
    elif per_item:
        out["per_item"] = {"acc": [int(r["greedy"]) for r in result.per_item]}
    if contaminated is not None:
        if len(contaminated) != len(result.per_item):
            raise ValueError(f"{len(contaminated)} contamination flags for {len(result.per_item)} items")
        clean = [r for r, flagged in zip(result.per_item, contaminated) if not flagged]
        metrics = choice_metrics if benchmark.kind == "multiple_choice" else cloze_metrics
        out["contamination"] = {"items": int(sum(map(bool, contaminated))), "of": len(contaminated),
                                "share": float(np.mean(contaminated)) if len(contaminated) else 0.0,
                                "clean": metrics(clean) if clean else None}
    return out


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
    device = model.head_weight().device
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


# --------------------------------------------------------------- per document: standard errors

@dataclass
class DocumentScores:
    """Sums per document of a scored token stream: the unit the standard errors are over."""
    nats: np.ndarray        # cross-entropy of all its targets (its separator included)
    tokens: np.ndarray      # its targets
    bpb_nats: np.ndarray    # cross-entropy of the targets that stand for bytes (not the separator)
    bytes: np.ndarray       # UTF-8 bytes of its text
    texts: list[str]        # its text as scored (decoded), for the digest and decontamination

    def metrics(self, keep: np.ndarray | None = None) -> dict:
        """loss and bits per byte (totals over the kept documents, as loss_metrics) with their
        standard errors over documents."""
        pick = (lambda a: a) if keep is None else (lambda a: a[keep])  # noqa: E731
        nats, tokens, bpb_nats, nbytes = pick(self.nats), pick(self.tokens), pick(self.bpb_nats), pick(self.bytes)
        n_tokens, n_bytes = int(tokens.sum()), int(nbytes.sum())
        loss = float(nats.sum() / n_tokens) if n_tokens else float("nan")
        return {"documents": int(len(nats)), "loss": loss, "loss_stderr": ratio_stderr(nats, tokens),
                "perplexity": float(math.exp(loss)) if n_tokens else float("nan"),
                "bits_per_byte": float(bpb_nats.sum() / math.log(2) / n_bytes) if n_bytes else float("nan"),
                "bits_per_byte_stderr": ratio_stderr(bpb_nats / math.log(2), nbytes),
                "tokens": n_tokens, "bytes": n_bytes}

    def sha256(self) -> str:
        return texts_sha256(self.texts)


def texts_sha256(texts: Sequence[str]) -> str:
    """The digest of a held-out set: its documents' UTF-8 bytes, each followed by a NUL, in order.
    The same text read from JSONL, Parquet or a token artifact gives the same digest."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def ratio_stderr(numerator: np.ndarray, denominator: np.ndarray) -> float:
    """Standard error of sum(numerator) / sum(denominator) with documents as the sampled unit
    (the delta method for a ratio of means: residuals r_i = x_i - R·y_i,
    se = sqrt(Σ r_i² / (n (n-1))) / mean(y)). A document's bits are not independent of its
    length, so the plain stderr of per-document bits per byte would be the wrong one."""
    n = len(numerator)
    if n < 2 or denominator.sum() <= 0:
        return float("nan")
    x, y = numerator.astype(np.float64), denominator.astype(np.float64)
    residual = x - (x.sum() / y.sum()) * y
    return float(math.sqrt((residual ** 2).sum() / (n * (n - 1))) / y.mean())


def document_scores(tokens: np.ndarray, nats: np.ndarray, byte_lengths: np.ndarray, eot_id: int,
                    tokenizer) -> DocumentScores:
    """Per-document sums of a stream [<|endoftext|>, doc 1, <|endoftext|>, doc 2, ...]: target j
    belongs to the document it ends or is inside of (a separator to the document before it)."""
    targets = tokens[1:1 + len(nats)]
    is_separator = targets == eot_id
    document = np.cumsum(is_separator) - is_separator
    n_docs = int(document[-1]) + 1 if len(document) else 0
    lengths = byte_lengths[targets]
    sums = lambda w: np.bincount(document, weights=w, minlength=n_docs)  # noqa: E731
    ends = np.flatnonzero(is_separator)
    starts = np.concatenate([[0], ends + 1])[:n_docs]
    stops = np.concatenate([ends, [len(targets)]])[:n_docs]
    texts = tokenizer.decode_batch([targets[a:b].tolist() for a, b in zip(starts, stops)], skip_special_tokens=False)
    return DocumentScores(nats=sums(nats), tokens=np.bincount(document, minlength=n_docs).astype(np.int64),
                          bpb_nats=sums(np.where(lengths > 0, nats, 0.0)), bytes=sums(lengths).astype(np.int64),
                          texts=texts)


def text_stream(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Documents as the loader streams them, with one separator in front: the same layout as a split."""
    eot_id = tokenizer.token_to_id(EOT_TOKEN)
    pieces = [np.array([eot_id], np.int64)]
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        pieces += [np.asarray(encoding.ids, np.int64), np.array([eot_id], np.int64)]
    return np.concatenate(pieces)


def score_stream(model, tokenizer, tokens: np.ndarray, batch_size: int = 8, show_progress: bool = True,
                 desc: str = "held-out loss") -> tuple[DocumentScores, np.ndarray]:
    """Per-document scores of a token stream, and the per-token losses."""
    bar = _bar(len(tokens) - 1, f"evaluate: {desc}", "tok", show_progress)
    try:
        nats = token_losses(model, tokens, batch_size, progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    return document_scores(tokens, nats, token_byte_lengths(tokenizer), tokenizer.token_to_id(EOT_TOKEN), tokenizer), nats


def evaluate_held_out(model, files: Sequence[Path], tokenizer, split: str = "val", max_tokens: int = 0,
                      batch_size: int = 8, show_progress: bool = True, texts: Sequence[str] | None = None,
                      keep_documents: bool = False) -> dict:
    """Loss, perplexity and bits per byte, with standard errors over documents, of the model on a
    split of token parts (or on `texts`, tokenized here with the model's tokenizer), and the
    unigram baseline (train-split frequencies of `files`, when given) on the same tokens. The
    result names the set: its sha256 (texts_sha256) and document count. keep_documents: the
    DocumentScores under "_documents" (for scores over a subset)."""
    eot_id = tokenizer.token_to_id(EOT_TOKEN)
    if texts is not None:
        tokens = text_stream(tokenizer, texts)
    else:  # a separator first, so the first document is read as every other one (after <|endoftext|>)
        tokens = np.concatenate([[eot_id], read_split_tokens(files, split, eot_id, max_tokens)])
    if len(tokens) < 3:
        return {"split": split, "tokens": 0, "note": f"no {split} tokens in the input"}
    documents, nats = score_stream(model, tokenizer, tokens, batch_size, show_progress,
                                   f"{split} loss" if texts is None else "held-out loss")
    if texts is not None:
        documents.texts = list(texts)  # the digest of the text as given, not as decoded
    targets = tokens[1:]
    result = {"split": split, **documents.metrics(), "bpb_tokens": int((token_byte_lengths(tokenizer)[targets] > 0).sum()),
              "sha256": documents.sha256()}
    if files:
        unigram = unigram_logprobs(files, eot_id, tokenizer.get_vocab_size())
        result["unigram"] = loss_metrics(targets, -unigram[targets], token_byte_lengths(tokenizer))
    if keep_documents:
        result["_documents"] = documents
    return result
