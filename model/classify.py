"""Text classification fine-tuning: a linear head on the GPT's last real token.

    [<|endoftext|>] + text ids + <|pad|>…  ─▶ GPT.hidden_states ─▶ h[last non-pad position] ─▶ score ─▶ label logits

- The head reads the hidden state of the **last non-padding token** of each row. Taking the last
  position of a padded batch (the bug people hit most) would read a pad's state, and the prediction
  would change with whatever else is in the batch. Rows are padded on the right, so with causal
  attention that position never sees a pad: a text gets the same logits alone or in any batch.
- Each text starts with <|endoftext|>, the token pretraining put before every document.
- `Classifier` holds the GPT as `.model` and the head as `.score`, which are the names of
  transformers' LlamaForSequenceClassification: `export_sequence_classification` writes a folder it
  loads with the same logits (it also picks the last non-pad token, by pad_token_id).
- What trains (`trainable`): `last-block` (default: the last block, the final norm and the head; cheap
  and hard to overfit on small data), `all`, or `lora` (adapters on the attention projections, plus
  the head; model/lora.py).

PyTorch only; the stage wiring (data files, artifact) is pipeline/stages/classify.py.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.gpt import GPT, GPTConfig
from model.special_tokens import EOT_TOKEN, PAD_TOKEN

TRAINABLE = ("last-block", "all", "lora")
FORMAT = 1


class ClassifyError(ValueError):
    """A data file or setting classification cannot use; one line naming the file and what is wrong."""


# ------------------------------------------------------------------------------------------ data

def read_labelled(path: str | Path) -> list[tuple[str, str]]:
    """(text, label) pairs from JSONL (one {"text", "label"} object per line) or a JSON array of them.
    Labels are strings (integers are taken as their decimal string)."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClassifyError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClassifyError(f"{path}: unreadable ({exc})") from None
    records: list[tuple[str, object]] = []
    if raw.lstrip().startswith("["):
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ClassifyError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        records = [(f"item {i}", item) for i, item in enumerate(items)]
    else:
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ClassifyError(f"{path}:{n}: not a JSON object ({exc.msg}); classify reads JSONL with "
                                    "`text` and `label`") from None
    pairs = []
    for where, item in records:
        if not isinstance(item, dict):
            raise ClassifyError(f"{path}: {where}: not a JSON object; classify reads JSONL with `text` and `label`")
        text, label = item.get("text"), item.get("label")
        if not isinstance(text, str) or not text.strip():
            raise ClassifyError(f"{path}: {where}: no `text` string (classify reads JSONL with `text` and `label`)")
        if isinstance(label, bool) or not isinstance(label, (str, int)) or str(label).strip() == "":
            raise ClassifyError(f"{path}: {where}: `label` must be a non-empty string, got {label!r}")
        pairs.append((text, str(label)))
    if not pairs:
        raise ClassifyError(f"{path}: no examples")
    return pairs


def encode_texts(tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """<|endoftext|> + the text's ids, cut to max_len tokens (the start is kept)."""
    eot = tokenizer.token_to_id(EOT_TOKEN)
    return [([eot] + e.ids)[:max_len] for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def pad_batch(rows: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and each row's length (B,)."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return ids.to(device), torch.tensor([len(r) for r in rows], device=device)


# ----------------------------------------------------------------------------------------- model

class Classifier(nn.Module):
    """GPT body + a bias-free linear head (Llama's `score`) on the last non-padding token."""

    def __init__(self, model: GPT, num_labels: int):
        super().__init__()
        self.model = model
        self.score = nn.Linear(model.config.n_embd, num_labels, bias=False)
        nn.init.normal_(self.score.weight, std=0.02)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (B, T) right-padded, lengths (B,) → logits (B, num_labels)."""
        hidden = self.model.hidden_states(ids)  # (B, T, n_embd); position t sees only 0..t
        last = hidden[torch.arange(ids.size(0), device=ids.device), lengths - 1]
        return self.score(last)


def set_trainable(classifier: Classifier, mode: str, lora_rank: int = 8, lora_alpha: float = 16.0,
                  lora_targets="q,k,v,o") -> dict:
    """Freeze what `mode` does not train; returns trainable/total parameter counts (and LoRA's figures)."""
    model = classifier.model
    stats: dict = {}
    if mode == "lora":
        from model.lora import apply_lora

        stats = apply_lora(model, lora_rank, lora_alpha, lora_targets)
    else:
        for p in model.parameters():
            p.requires_grad_(mode == "all")
        if mode == "last-block":
            for p in list(model.layers[-1].parameters()) + list(model.norm.parameters()):
                p.requires_grad_(True)
        elif mode != "all":
            raise ClassifyError(f"trainable must be one of {', '.join(TRAINABLE)}, not {mode!r}")
        if model.lm_head is not None:
            model.lm_head.weight.requires_grad_(False)  # the LM head is not on the classifier's path
    classifier.score.weight.requires_grad_(True)
    stats.update(trainable_params=sum(p.numel() for p in classifier.parameters() if p.requires_grad),
                 total_params=sum(p.numel() for p in classifier.parameters()))
    return stats


def predict(classifier: Classifier, rows: list[list[int]], pad_id: int, batch_size: int = 32) -> torch.Tensor:
    """Label probabilities (N, num_labels) for encoded rows, in batches."""
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            ids, lengths = pad_batch(rows[start:start + batch_size], pad_id, device)
            out.append(F.softmax(classifier(ids, lengths).float(), dim=-1).cpu())
    classifier.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, classifier.score.out_features)


# --------------------------------------------------------------------------------------- metrics

def classification_report(labels: list[str], truth: list[int], predicted: list[int], majority: int) -> dict:
    """Accuracy, per-class precision / recall / F1, the confusion matrix (rows: true label, columns:
    predicted), and the majority-class baseline (always answering the training set's commonest label)."""
    k = len(labels)
    matrix = [[0] * k for _ in range(k)]
    for t, p in zip(truth, predicted):
        matrix[t][p] += 1
    per_class = {}
    for i, name in enumerate(labels):
        tp = matrix[i][i]
        predicted_i = sum(matrix[r][i] for r in range(k))
        support = sum(matrix[i])
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    n = len(truth)
    accuracy = sum(matrix[i][i] for i in range(k)) / n if n else 0.0
    present = [c for c in per_class.values() if c["support"]]
    return {
        "items": n,
        "accuracy": accuracy,
        "macro_f1": sum(c["f1"] for c in present) / len(present) if present else 0.0,
        "majority_baseline": {"label": labels[majority], "accuracy": sum(1 for t in truth if t == majority) / n if n else 0.0},
        "per_class": per_class,
        "confusion_matrix": {"labels": labels, "rows_true_columns_predicted": matrix},
    }


# -------------------------------------------------------------------------------------- training

@dataclass
class ClassifyTrainConfig:
    trainable: str = "last-block"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: str = "q,k,v,o"
    balance: bool = False
    epochs: int = 3
    max_steps: int = 0
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_len: int = 256
    seed: int = 0
    labels: list[str] = field(default_factory=list)  # fixed label order (default: sorted training labels)


def class_weights(counts: list[int]) -> torch.Tensor:
    """--balance: loss weight N / (classes × count) per class, so each class weighs the same in the
    loss whatever its number of examples (weight × count is N / classes for every class present)."""
    total, present = sum(counts), sum(1 for c in counts if c)
    return torch.tensor([total / (present * c) if c else 0.0 for c in counts])


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_classifier(model: GPT, tokenizer, train: list[tuple[str, str]], config: ClassifyTrainConfig,
                     metrics_path: Path | None = None, eval_set: list[tuple[str, str]] | None = None,
                     progress: bool = True) -> tuple[Classifier, dict]:
    """Fine-tune a head (and what config.trainable says) on (text, label) pairs. Returns the
    classifier (LoRA adapters still separate; merge with model/lora.merge_lora) and a summary."""
    labels = list(config.labels) or sorted({label for _, label in train})
    index = {name: i for i, name in enumerate(labels)}
    pad_id = tokenizer.token_to_id(PAD_TOKEN)
    if pad_id is None:
        raise ClassifyError("the tokenizer has no <|pad|> token")
    device = next(model.parameters()).device
    torch.manual_seed(config.seed)
    classifier = Classifier(model, len(labels)).to(device)
    stats = set_trainable(classifier, config.trainable, config.lora_rank, config.lora_alpha, config.lora_targets)
    rows = encode_texts(tokenizer, [t for t, _ in train], config.max_len)
    targets = [index[label] for _, label in train]
    counts = Counter(targets)
    weight = class_weights([counts[i] for i in range(len(labels))]).to(device) if config.balance else None
    steps_per_epoch = math.ceil(len(rows) / config.batch_size)
    total = config.max_steps or config.epochs * steps_per_epoch
    params = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    eval_rows = encode_texts(tokenizer, [t for t, _ in eval_set], config.max_len) if eval_set else []
    eval_targets = [index.get(label, -1) for _, label in eval_set] if eval_set else []

    bar = _progress(total, progress, "classify")
    rng = random.Random(config.seed)
    order: list[int] = []
    classifier.train()
    history, seen, started = [], 0, time.time()
    metrics = open(metrics_path, "w") if metrics_path else None
    try:
        for step in range(total):
            if len(order) < config.batch_size:  # a new epoch: reshuffle
                fresh = list(range(len(rows)))
                rng.shuffle(fresh)
                order += fresh
            batch, order = order[:config.batch_size], order[config.batch_size:]
            ids, lengths = pad_batch([rows[i] for i in batch], pad_id, device)
            y = torch.tensor([targets[i] for i in batch], device=device)
            lr = lr_at(step, total, config.lr, warmup=min(10, total // 10))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(classifier(ids, lengths).float(), y, weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            seen += int(lengths.sum())
            row = {"step": step + 1, "loss": loss.item(), "lr": lr, "tokens": seen}
            last_of_epoch = (step + 1) % steps_per_epoch == 0 or step + 1 == total
            if eval_rows and last_of_epoch:
                row.update(_eval_loss(classifier, eval_rows, eval_targets, pad_id))
            history.append(row)
            if metrics:
                metrics.write(json.dumps(row) + "\n")
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if metrics:
            metrics.close()
    classifier.eval()
    summary = {"labels": labels, "steps": total, "epochs": total / steps_per_epoch, "examples": len(rows),
               "class_counts": {labels[i]: counts[i] for i in range(len(labels))},
               "majority_label": labels[max(range(len(labels)), key=lambda i: (counts[i], -i))],
               "first_loss": history[0]["loss"] if history else None,
               "last_loss": history[-1]["loss"] if history else None,
               "seconds": time.time() - started, "pad_id": pad_id, **stats}
    return classifier, summary


def _eval_loss(classifier: Classifier, rows, targets, pad_id) -> dict:
    known = [(r, t) for r, t in zip(rows, targets) if t >= 0]
    if not known:
        return {}
    probs = predict(classifier, [r for r, _ in known], pad_id)
    truth = torch.tensor([t for _, t in known])
    loss = F.nll_loss(torch.log(probs.clamp_min(1e-12)), truth)
    return {"val_loss": float(loss), "val_accuracy": float((probs.argmax(-1) == truth).float().mean())}


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="step", desc=desc, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 10.0)


# ------------------------------------------------------------------------------- save, load, export

def save_classifier(classifier: Classifier, folder: Path, labels: list[str], meta: dict) -> None:
    """model.safetensors (the body under `model.*` and `score.weight`; adapters merged first) and config.json."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in classifier.state_dict().items()}
    if classifier.model.lm_head is not None:  # not used by a classifier, and not in Llama's SeqCls
        state.pop("model.lm_head.weight", None)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {"format": FORMAT, "kind": "classifier", "model": asdict(classifier.model.config),
              "labels": labels, **meta}
    (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")


def load_classifier(folder: str | Path, device="cpu") -> tuple[Classifier, dict]:
    """A classify artifact → (Classifier in eval mode, its config.json)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / "config.json").read_text())
        state = load_file(str(folder / "model.safetensors"), device="cpu")
    except (OSError, ValueError) as exc:
        raise ClassifyError(f"{folder}: not a classify artifact ({exc})") from None
    if meta.get("kind") != "classifier" or "labels" not in meta:
        raise ClassifyError(f"{folder}: not a classify artifact (config.json has no labels)")
    model_config = GPTConfig(**meta["model"])
    classifier = Classifier(GPT(model_config), len(meta["labels"]))
    missing, unexpected = classifier.load_state_dict(state, strict=False)
    if [k for k in missing if k != "model.lm_head.weight"] or unexpected:
        raise ClassifyError(f"{folder}/model.safetensors does not fit its config: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}")
    return classifier.to(device).eval(), meta


def export_sequence_classification(classifier: Classifier, labels: list[str], tokenizer_path: str | Path,
                                   output: str | Path, overwrite: bool = False) -> Path:
    """A folder transformers loads as LlamaForSequenceClassification (AutoModelForSequenceClassification):
    the causal-LM export's config and tokenizer files, with the head as `score.weight`, num_labels,
    id2label / label2id, and pad_token_id (how transformers finds each row's last real token)."""
    from safetensors.torch import save_file

    from model.export import export_hf

    output = export_hf(classifier.model, tokenizer_path, output, overwrite=overwrite)
    config = json.loads((output / "config.json").read_text())
    if config.get("pad_token_id") is None:
        raise ClassifyError(f"{tokenizer_path}: has no <|pad|> token, which sequence classification needs")
    config.update(architectures=["LlamaForSequenceClassification"], num_labels=len(labels),
                  id2label={str(i): name for i, name in enumerate(labels)},
                  label2id={name: i for i, name in enumerate(labels)}, problem_type="single_label_classification")
    (output / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {f"model.{k}": v for k, v in classifier.model.state_dict().items() if not k.startswith("lm_head.")}
    state["score.weight"] = classifier.score.weight
    save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()},
              str(output / "model.safetensors"), metadata={"format": "pt"})
    (output / "generation_config.json").unlink(missing_ok=True)
    return output
