"""The knobs of instruction tuning (SFTConfig), torch-free: the sft stage's CLI options and Prefect
form are built from this dataclass without importing torch; model/sft.py does the training."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Peak learning rates when --lr is 0: full fine-tuning moves every weight and takes small steps;
# LoRA's adapters start at zero and take larger ones (the usual ~10x).
DEFAULT_LR = {"full": 3e-4, "lora": 2e-3}
MICRO_BATCH_TOKENS = {"cpu": 8192, "cuda": 65536}  # padded tokens per forward pass when --micro-batch-tokens is 0


class SFTError(ValueError):
    """A setting or input sft cannot train on (one line: which and why)."""


def knob(default, help: str, *, choices: tuple | None = None, in_key: bool = True):
    """A config field in pipeline.knobs.knob's format (model/ imports nothing from pipeline/)."""
    meta = {"help": help, "in_key": in_key}
    if choices:
        meta["choices"] = choices
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class SFTConfig:
    data: list[str] = knob([], "Instruction data: JSONL or JSON files of Alpaca (instruction, input, output), chat "
                               "(messages) or prompt/completion records; repeat for several. Their content enters "
                               "the key, not their paths.", in_key=False)
    epochs: int = knob(3, "Passes over the training examples (when --max-steps is 0).")
    max_steps: int = knob(0, "Optimizer steps (0: as many as --epochs take).")
    lr: float = knob(0.0, f"Peak learning rate (0: {DEFAULT_LR['full']:g} for full fine-tuning, "
                          f"{DEFAULT_LR['lora']:g} with LoRA).")
    warmup_steps: int = knob(5, "Steps of linear warmup; then cosine decay to --min-lr-ratio of the peak.")
    min_lr_ratio: float = knob(0.1, "Final learning rate as a fraction of the peak.")
    batch_tokens: int = knob(4096, "Tokens per optimizer step (whole examples are added until the next would "
                                   "pass this; one example at least).")
    micro_batch_tokens: int = knob(0, "Padded tokens per forward pass (0: "
                                      f"{MICRO_BATCH_TOKENS['cpu']} on CPU, {MICRO_BATCH_TOKENS['cuda']} on GPU).")
    mask_prompt: bool = knob(True, "Loss only on the assistant's tokens and its end-of-turn marker (off: on "
                                   "every token of the conversation).")
    lora_rank: int = knob(0, "LoRA rank (0: full fine-tuning). The artifact holds the merged weights and the "
                             "adapter in PEFT's format (adapter/).")
    lora_alpha: float = knob(16.0, "LoRA alpha (the update is scaled by alpha / rank).")
    lora_targets: str = knob("q,k,v,o", "Projections that get adapters: q, k, v, o, gate, up, down (comma "
                                        "separated), or all.")
    val_fraction: float = knob(0.1, "Fraction of the examples held out for the validation loss (by a hash of "
                                    "their content; at least one when there are two or more).")
    eval_every: int = knob(20, "Validation loss every N steps, and at the last step (0: only at the last).")
    weight_decay: float = knob(0.0, "AdamW weight decay on the trained matrices.")
    grad_clip: float = knob(1.0, "Clip the global gradient norm to this (0: no clipping).")
    seed: int = knob(0, "Seed of the example order and of the LoRA initialisation.")
    device: str = knob("auto", "cuda, cpu, cuda:N (auto: the GPU when there is one).", in_key=False)
    cpu_threads: int = knob(0, "Threads of CPU math (0: torch's default, one per core).", in_key=False)

    def check(self) -> None:
        for name in ("epochs", "batch_tokens"):
            if getattr(self, name) < 1:
                raise SFTError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "warmup_steps", "micro_batch_tokens", "lora_rank", "eval_every", "cpu_threads"):
            if getattr(self, name) < 0:
                raise SFTError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise SFTError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.val_fraction < 1:
            raise SFTError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise SFTError(f"min_lr_ratio must be between 0 and 1, got {self.min_lr_ratio}")
        if self.lora_rank and not self.lora_alpha > 0:
            raise SFTError(f"lora_alpha must be above 0, got {self.lora_alpha}")
        targets = [t.strip() for t in self.lora_targets.split(",") if t.strip()]
        known = ("q", "k", "v", "o", "gate", "up", "down", "all")
        bad = [t for t in targets if t not in known and t.removesuffix("_proj") not in known]
        if not targets or bad:
            raise SFTError(f"lora_targets: unknown {', '.join(bad) or '(none given)'}; choose among "
                           "q, k, v, o, gate, up, down, all")

    def peak_lr(self) -> float:
        return self.lr or DEFAULT_LR["lora" if self.lora_rank else "full"]
