"""Stage `classify`: a pretrain (or sft) artifact + labelled texts → a text classifier.

    scratchlm stage classify --input artifacts/pretrain/<key> --data train.jsonl --eval-data eval.jsonl

Data: JSONL (or a JSON array) of {"text": ..., "label": "..."}; labels are strings. The head is a
linear layer on the last non-padding token (model/classify.py). Without --eval-data, --val-fraction
of the examples (chosen by a hash of their text) is held out instead.

Output folder: model.safetensors (`model.*` body + `score.weight`, LoRA merged), config.json
(labels, model config), tokenizer.json, metrics.jsonl, loss.png, eval.json (accuracy, per-class
precision / recall / F1, the confusion matrix, and the majority-class baseline beside them),
confusion.png, and with `--trainable lora` the adapter in PEFT's format (adapter_config.json,
adapter_model.safetensors, task SEQ_CLS with `score` in modules_to_save). `scratchlm classify
ARTIFACT "text"` prints a label and its probability; `scratchlm export --format hf-classifier`
writes LlamaForSequenceClassification.

The key holds the input checkpoint's digests (weights, config, tokenizer) and the data files'
digests; their paths are not in it. A bad data file is one line naming it, before any training.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from pipeline.errors import StageError, check_range
from pipeline.knobs import knob
from pipeline.stage import GlobalStage
from pipeline.stages.model_inputs import checkpoint_files, load_input_model

TRAINABLE = ("last-block", "all", "lora")


@dataclass
class ClassifyConfig:
    data: list[str] = knob([], "Training examples: JSONL (or a JSON array) of {\"text\", \"label\"} records; repeat "
                               "for several. Their content enters the key, not their paths.", in_key=False)
    eval_data: list[str] = knob([], "Evaluation examples, same format [default: --val-fraction of --data held out].",
                                in_key=False)
    trainable: str = knob("last-block", "What trains besides the head: last-block (the last transformer block and "
                                        "the final norm), all, or lora (adapters, see --lora-rank).", choices=TRAINABLE)
    lora_rank: int = knob(8, "LoRA rank, with --trainable lora.")
    lora_alpha: float = knob(16.0, "LoRA alpha (the update is scaled by alpha / rank), with --trainable lora.")
    lora_targets: str = knob("q,k,v,o", "Projections that get adapters with --trainable lora: q, k, v, o, gate, "
                                        "up, down (comma separated), or all.")
    balance: bool = knob(False, "Weigh each class equally in the loss (inverse class frequency), for skewed labels.")
    epochs: int = knob(3, "Passes over the training examples (when --max-steps is 0).")
    max_steps: int = knob(0, "Optimizer steps (0: as many as --epochs take).")
    batch_size: int = knob(16, "Examples per step.")
    lr: float = knob(1e-3, "Peak learning rate (warmup, then cosine decay to 10%).")
    weight_decay: float = knob(0.0, "AdamW weight decay.")
    max_len: int = knob(256, "Tokens per text at most (the start is kept; also capped by the model's block size).")
    val_fraction: float = knob(0.1, "Without --eval-data: fraction of --data held out for evaluation (by a hash "
                                    "of the text).")
    seed: int = knob(0, "Seed of the head's initialisation and the example order.")
    device: str = knob("auto", "Device: auto (cuda if available), cpu, cuda, cuda:1.", in_key=False)
    cpu_threads: int = knob(0, "Threads of CPU math (0: torch's default).", in_key=False)

    def check(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}")
        check_range(self, ("epochs", "batch_size", "lora_rank", "max_len"), low=1)
        check_range(self, ("max_steps", "cpu_threads", "seed"), low=0)
        check_range(self, ("lr", "weight_decay"), low=0.0)
        check_range(self, "lora_alpha", low=1e-9)
        check_range(self, "val_fraction", low=0.0, high=0.9)
        if self.trainable == "lora":
            from model.lora import LoRAError, parse_targets

            try:
                parse_targets(self.lora_targets)
            except LoRAError as exc:
                raise ValueError(f"lora_targets: {exc}") from None


# ----------------------------------------------------------------------------- inputs and references

def model_input_files(inputs: Sequence, stage: str) -> list[Path]:
    return checkpoint_files(inputs, stage)


def classify_input_files(inputs: Sequence) -> list[Path]:
    return model_input_files(inputs, "classify")  # a module-level function: stages are pickled


def read_examples(files: Sequence[str]) -> list[tuple[str, str]]:
    from model.classify import ClassifyError, read_labelled

    pairs = []
    for name in files:
        try:
            pairs += read_labelled(name)
        except ClassifyError as exc:
            raise StageError(str(exc)) from None
    return pairs


def classify_references(config: ClassifyConfig) -> list[Path]:
    """The data files (their content names the output). Read here, so a bad file is one line before
    anything is loaded or trained."""
    if not config.data:
        raise StageError("classify: no training data (give --data FILE)")
    train = read_examples(config.data)
    if config.eval_data:
        known = {label for _, label in train}
        unseen = sorted({label for _, label in read_examples(config.eval_data)} - known)
        if unseen:
            raise StageError(f"{config.eval_data[0]}: label(s) {', '.join(map(repr, unseen[:5]))} never occur in "
                             "the training data")
    if len({label for _, label in train}) < 2:
        raise StageError(f"{config.data[0]}: only one label in the training data; a classifier needs two or more")
    return [Path(p) for p in config.data] + [Path(p) for p in config.eval_data]


def held_out(text: str, fraction: float) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


# ------------------------------------------------------------------------------------------- run

def run_classify(files: list[Path], config: ClassifyConfig, out_dir: Path, against=()):
    import torch

    from model.classify import (ClassifyError, ClassifyTrainConfig, classification_report, encode_texts, predict,
                                save_classifier, train_classifier)
    from model.lora import LoRAError, merge_lora, save_peft_adapter

    if config.cpu_threads > 0:
        torch.set_num_threads(config.cpu_threads)
    folder = files[0].parent
    model, tokenizer, tokenizer_path, meta = load_input_model(files, config.device)
    examples = read_examples(config.data)
    if config.eval_data:
        train, evaluation = examples, read_examples(config.eval_data)
    else:
        train = [e for e in examples if not held_out(e[0], config.val_fraction)]
        evaluation = [e for e in examples if held_out(e[0], config.val_fraction)]
    if len({label for _, label in train}) < 2:
        raise StageError(f"{config.data[0]}: fewer than two labels left for training after holding out --val-fraction")
    train_config = ClassifyTrainConfig(
        trainable=config.trainable, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
        lora_targets=config.lora_targets, balance=config.balance, epochs=config.epochs, max_steps=config.max_steps,
        batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
        max_len=min(config.max_len, model.config.block_size), seed=config.seed)
    try:
        classifier, summary = train_classifier(model, tokenizer, train, train_config, out_dir / "metrics.jsonl",
                                               evaluation)
    except (ClassifyError, LoRAError) as exc:
        raise StageError(f"classify: {exc}") from None
    labels = summary["labels"]
    side = {}
    if config.trainable == "lora":  # the adapter as PEFT saves one for AutoModelForSequenceClassification
        save_peft_adapter(classifier.model, out_dir / "adapter", folder, task_type="SEQ_CLS",
                          extra_tensors={"score.weight": classifier.score.weight})
        side.update({name: out_dir / "adapter" / name for name in ("adapter_config.json", "adapter_model.safetensors")})
        merge_lora(classifier.model)

    report: dict = {"checkpoint": str(folder), "labels": labels, "trainable": config.trainable}
    if evaluation:
        index = {name: i for i, name in enumerate(labels)}
        probs = predict(classifier, encode_texts(tokenizer, [t for t, _ in evaluation], train_config.max_len),
                        summary["pad_id"])
        report.update(classification_report(labels, [index[label] for _, label in evaluation],
                                            probs.argmax(-1).tolist(), index[summary["majority_label"]]))
        report["eval_source"] = "--eval-data" if config.eval_data else f"{config.val_fraction:g} of --data held out"
    else:
        report["note"] = "no evaluation examples (give --eval-data, or a larger --val-fraction)"
    report["train"] = {k: v for k, v in summary.items() if k != "pad_id"}
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    save_classifier(classifier, out_dir, labels, {"base": str(folder), "base_step": meta.get("step"),
                                                   "pad_id": summary["pad_id"], "max_len": train_config.max_len,
                                                   "classify": asdict(config)})
    shutil.copyfile(tokenizer_path, out_dir / "tokenizer.json")
    side.update({name: out_dir / name for name in ("model.safetensors", "config.json", "tokenizer.json",
                                                    "metrics.jsonl", "eval.json")})
    if plot_metrics(out_dir / "metrics.jsonl", out_dir / "loss.png", f"classify ({config.trainable})",
                    [("cross-entropy", ("loss", "val_loss")), ("accuracy", ("val_accuracy",))]):
        side["loss.png"] = out_dir / "loss.png"
    if "confusion_matrix" in report and plot_confusion(report, out_dir / "confusion.png"):
        side["confusion.png"] = out_dir / "confusion.png"
    lines = summary_lines(report)
    for line in lines:
        print(line, file=sys.stderr)
    stats = {"docs_in": len(train) + len(evaluation), "docs_out": len(evaluation), "bytes_in": 0, "bytes_out": 0,
             "dropped": {}, "faults": {}, "skipped": {}, "extra": {},
             "classify": {k: report.get(k) for k in ("accuracy", "macro_f1", "majority_baseline", "items")}
             | {"trainable_params": summary["trainable_params"], "total_params": summary["total_params"],
                "steps": summary["steps"], "first_loss": summary["first_loss"], "last_loss": summary["last_loss"]},
             "summary_lines": lines}
    return [], stats, side


def summary_lines(report: dict) -> list[str]:
    train = report["train"]
    lines = [f"classify: {train['examples']} examples, {len(report['labels'])} labels, {train['steps']} steps, "
             f"{train['trainable_params']:,} of {train['total_params']:,} parameters trained ({report['trainable']}); "
             f"loss {train['first_loss']:.4f} → {train['last_loss']:.4f}"]
    if "accuracy" in report:
        base = report["majority_baseline"]
        lines.append(f"classify: accuracy {report['accuracy']:.4f} on {report['items']} examples "
                     f"(majority class {base['label']!r}: {base['accuracy']:.4f}), macro F1 {report['macro_f1']:.4f}")
    return lines


def plot_metrics(metrics_path: Path, png: Path, title: str, panels) -> bool:
    """One panel per (y label, metrics.jsonl keys) against the step; a key's missing steps are skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    panels = [(label, keys) for label, keys in panels if any(k in r for r in rows for k in keys)]
    if not rows or not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), dpi=100, squeeze=False)
    for ax, (label, keys) in zip(axes[0], panels):
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), "o-" if len(points) < 30 else "-", ms=3, lw=1.2, label=key)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return True


def plot_confusion(report: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = report["confusion_matrix"]["labels"]
    matrix = report["confusion_matrix"]["rows_true_columns_predicted"]
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    darkest = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > darkest / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {report['accuracy']:.3f} (majority class {report['majority_baseline']['accuracy']:.3f})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


STAGE = GlobalStage(
    name="classify",
    version="1",
    config_cls=ClassifyConfig,
    run=run_classify,
    description="Fine-tunes a pretrain or sft artifact into a text classifier (JSONL text, label): a linear head on the "
                "last non-padding token, training the last block (default), everything, or LoRA adapters; writes "
                "eval.json (accuracy, per-class precision/recall, confusion matrix, majority baseline).",
    input_suffixes=(".safetensors", ".json"),
    references=classify_references,
    input_files=classify_input_files,
)
