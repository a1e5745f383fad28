"""Stage `dpo`: an sft (or pretrain) artifact + preference pairs → a preference-tuned model.

    scratchlm stage dpo --input artifacts/sft/<key> --data prefs.jsonl --beta 0.1

Data: JSONL (or a JSON array) of {"prompt", "chosen", "rejected"}, each a string or a list of chat
messages; rendered with the chat template (model/chat.py). --val-fraction of the pairs (by a hash
of their content) is held out for the before/after figures.

Output folder: a checkpoint that loads wherever a pretrain artifact does (model.safetensors with
LoRA merged, config.json, tokenizer.json), reference_logps.parquet (the reference log-probs,
computed once before training), metrics.jsonl, loss.png, dpo.json (val loss, reward accuracy and
margin, log-prob preference accuracy, before and after), and with --lora-rank the adapter in PEFT's
format (adapter_config.json, adapter_model.safetensors). The key holds the input checkpoint's
digests and the data files' digests; a bad data file is one line, before any training.
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
from pipeline.stages.classify import model_input_files, plot_metrics
from pipeline.stages.model_inputs import load_input_model

DEFAULT_LR = {"full": 5e-6, "lora": 5e-5}  # adapters start at zero and take larger steps (the usual ~10x)


@dataclass
class DPOConfig:
    data: list[str] = knob([], "Preference pairs: JSONL (or a JSON array) of {\"prompt\", \"chosen\", \"rejected\"} "
                               "records (strings or chat messages); repeat for several. Their content enters the key, "
                               "not their paths.", in_key=False)
    beta: float = knob(0.1, "DPO's β: how far the model may move from the reference (smaller: further).")
    lr: float = knob(0.0, f"Peak learning rate (0: {DEFAULT_LR['full']:g} for full fine-tuning, {DEFAULT_LR['lora']:g} "
                          "with LoRA); linear warmup, then constant.")
    epochs: int = knob(1, "Passes over the training pairs (when --max-steps is 0).")
    max_steps: int = knob(0, "Optimizer steps (0: as many as --epochs take).")
    batch_size: int = knob(8, "Pairs per step (each pair is two sequences).")
    warmup_steps: int = knob(5, "Steps of linear warmup.")
    max_len: int = knob(0, "Longest prompt + answer in tokens (0: the model's block size); longer pairs are left out "
                           "and counted.")
    lora_rank: int = knob(0, "LoRA rank (0: every weight trains). The artifact holds the merged weights and the "
                             "adapter in PEFT's format.")
    lora_alpha: float = knob(16.0, "LoRA alpha (the update is scaled by alpha / rank).")
    lora_targets: str = knob("q,k,v,o", "Projections that get adapters: q, k, v, o, gate, up, down (comma "
                                        "separated), or all.")
    val_fraction: float = knob(0.1, "Fraction of the pairs held out for the before/after figures (by a hash of "
                                    "their content; at least one when there are two or more).")
    weight_decay: float = knob(0.0, "AdamW weight decay.")
    seed: int = knob(0, "Seed of the pair order and the LoRA initialisation.")
    device: str = knob("auto", "Device: auto (cuda if available), cpu, cuda, cuda:1.", in_key=False)
    cpu_threads: int = knob(0, "Threads of CPU math (0: torch's default).", in_key=False)

    def check(self) -> None:
        check_range(self, "beta", low=1e-9)
        check_range(self, ("lr", "weight_decay"), low=0.0)
        check_range(self, ("epochs", "batch_size"), low=1)
        check_range(self, ("max_steps", "warmup_steps", "max_len", "lora_rank", "seed", "cpu_threads"), low=0)
        check_range(self, "val_fraction", low=0.0, high=0.9)
        if self.lora_rank:
            check_range(self, "lora_alpha", low=1e-9)
            from model.lora import LoRAError, parse_targets

            try:
                parse_targets(self.lora_targets)
            except LoRAError as exc:
                raise ValueError(f"lora_targets: {exc}") from None


def dpo_input_files(inputs: Sequence) -> list[Path]:
    return model_input_files(inputs, "dpo")


def read_pairs(files: Sequence[str]):
    from model.dpo import DPOError, read_preferences

    records = []
    for name in files:
        try:
            records += read_preferences(name)
        except DPOError as exc:
            raise StageError(str(exc)) from None
    return records


def dpo_references(config: DPOConfig) -> list[Path]:
    """The data files; read here so a bad one is one line before anything is loaded."""
    if not config.data:
        raise StageError("dpo: no preference data (give --data FILE)")
    read_pairs(config.data)
    return [Path(p) for p in config.data]


def split_records(records, fraction: float):
    """Held-out pairs by a hash of their content; at least one of each when there are two or more."""
    keyed = sorted(((hashlib.sha256(json.dumps(r[1:], sort_keys=True).encode()).hexdigest(), i)
                    for i, r in enumerate(records)))
    val = {i for h, i in keyed if int(h[:8], 16) / 0xFFFFFFFF < fraction}
    if fraction > 0 and not val and len(records) >= 2:
        val = {keyed[0][1]}  # the smallest hash: still a function of the content
    if len(val) == len(records) and records:
        val.discard(keyed[-1][1])
    return [r for i, r in enumerate(records) if i not in val], [r for i, r in enumerate(records) if i in val]


# ------------------------------------------------------------------------------------------- run

def run_dpo(files: list[Path], config: DPOConfig, out_dir: Path, against=()):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from model.chat import ChatError
    from model.dpo import (DPOError, DPOTrainConfig, encode_pairs, metrics_from_logps, preference_metrics,
                           reference_logps, train_dpo)
    from model.special_tokens import PAD_TOKEN
    from model.lora import apply_lora, merge_lora, save_peft_adapter

    if config.cpu_threads > 0:
        torch.set_num_threads(config.cpu_threads)
    folder = files[0].parent
    model, tokenizer, tokenizer_path, meta = load_input_model(files, config.device)
    pad_id = tokenizer.token_to_id(PAD_TOKEN) or 0  # any id: padded positions are never scored
    train_records, val_records = split_records(read_pairs(config.data), config.val_fraction)
    max_len = min(config.max_len or model.config.block_size, model.config.block_size)
    try:
        train, too_long = encode_pairs(tokenizer, train_records, max_len)
        val, val_too_long = encode_pairs(tokenizer, val_records, max_len)
    except ChatError as exc:
        raise StageError(f"{tokenizer_path}: {exc}") from None
    except DPOError as exc:
        raise StageError(str(exc)) from None
    if not train:
        raise StageError(f"dpo: no training pair fits in {max_len} tokens ({too_long} longer); raise --max-len")

    # The reference: the input model's log-probs of every answer, once, before any update.
    print(f"dpo: reference log-probs of {len(train) + len(val)} pairs (once, before training) ...", file=sys.stderr,
          flush=True)
    reference = reference_logps(model, train + val, pad_id)
    ref_train, ref_val = reference[:len(train)], reference[len(train):]
    pq.write_table(pa.table({"split": ["train"] * len(train) + ["val"] * len(val),
                             "pair": [p.where for p in train + val],
                             "chosen_logp": reference[:, 0].double().numpy(),
                             "rejected_logp": reference[:, 1].double().numpy()}), out_dir / "reference_logps.parquet")
    before = metrics_from_logps(ref_val, ref_val, config.beta) if val else {}  # the policy is the reference

    lora_stats = {}
    if config.lora_rank:
        torch.manual_seed(config.seed)
        lora_stats = apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_targets)
    lr = config.lr or DEFAULT_LR["lora" if config.lora_rank else "full"]
    train_config = DPOTrainConfig(beta=config.beta, lr=lr, epochs=config.epochs, max_steps=config.max_steps,
                                  batch_size=config.batch_size, warmup_steps=config.warmup_steps,
                                  weight_decay=config.weight_decay, seed=config.seed)
    summary = train_dpo(model, train, ref_train, train_config, pad_id, out_dir / "metrics.jsonl")
    after = preference_metrics(model, val, ref_val, pad_id, config.beta) if val else {}
    side = {}
    if config.lora_rank:
        save_peft_adapter(model, out_dir / "adapter", folder)
        side.update({n: out_dir / "adapter" / n for n in ("adapter_config.json", "adapter_model.safetensors")})
        merge_lora(model)

    from safetensors.torch import save_file

    save_file({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()},
              str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    checkpoint = {"format": 1, "model": asdict(model.config), "step": summary["steps"],
                  "tokens_seen": meta.get("tokens_seen"), "base": str(folder), "dpo": asdict(config), "data": meta.get("data")}
    (out_dir / "config.json").write_text(json.dumps(checkpoint, indent=1) + "\n")
    shutil.copyfile(tokenizer_path, out_dir / "tokenizer.json")
    report = {"checkpoint": str(folder), "beta": config.beta, "lr": lr, "train_pairs": len(train),
              "val_pairs": len(val), "left_out_too_long": too_long + val_too_long, "before": before, "after": after,
              "train": summary, "lora": lora_stats}
    (out_dir / "dpo.json").write_text(json.dumps(report, indent=2) + "\n")
    side.update({n: out_dir / n for n in ("model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl",
                                          "dpo.json", "reference_logps.parquet")})
    if plot_metrics(out_dir / "metrics.jsonl", out_dir / "loss.png", f"dpo (beta {config.beta:g})",
                    [("DPO loss", ("loss",)), ("implicit reward (training batch)", ("reward_margin", "reward_accuracy"))]):
        side["loss.png"] = out_dir / "loss.png"
    lines = summary_lines(report)
    for line in lines:
        print(line, file=sys.stderr)
    stats = {"docs_in": len(train_records) + len(val_records), "docs_out": len(train) + len(val), "bytes_in": 0,
             "bytes_out": (out_dir / "model.safetensors").stat().st_size,
             "dropped": {"too_long": too_long + val_too_long} if too_long + val_too_long else {},
             "faults": {}, "skipped": {}, "extra": {},
             "dpo": {"before": before, "after": after, "steps": summary["steps"], "first_loss": summary["first_loss"],
                     "last_loss": summary["last_loss"]},
             "summary_lines": lines}
    return [], stats, side


def summary_lines(report: dict) -> list[str]:
    train = report["train"]
    lines = [f"dpo: {report['train_pairs']} pairs, {train['steps']} steps, beta {report['beta']:g}, lr {report['lr']:g}; "
             f"loss {train['first_loss']:.4f} → {train['last_loss']:.4f}"]
    b, a = report["before"], report["after"]
    if a:
        lines.append(f"dpo: val ({a['pairs']} pairs) reward accuracy {b['reward_accuracy']:.3f} → {a['reward_accuracy']:.3f}, "
                     f"margin {b['reward_margin']:.4f} → {a['reward_margin']:.4f}, log-prob preference accuracy "
                     f"{b['logp_accuracy']:.3f} → {a['logp_accuracy']:.3f}")
    return lines


STAGE = GlobalStage(
    name="dpo",
    version="1",
    config_cls=DPOConfig,
    run=run_dpo,
    description="Preference-tunes an sft (or pretrain) artifact with DPO on prompt/chosen/rejected pairs: reference "
                "log-probs computed once and stored (one model in memory), --beta, full or LoRA; writes a checkpoint "
                "and dpo.json (val reward accuracy and margin before and after).",
    input_suffixes=(".safetensors", ".json"),
    references=dpo_references,
    input_files=dpo_input_files,
)
