"""The training knobs (TrainConfig), torch-free: the pretrain stage's CLI options and Prefect form
are built from this dataclass without importing torch; model/train.py does the training."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

from model.presets import PRESETS

# Learning rates that suit each preset when --lr is 0 (smaller models take larger steps).
PRESET_LR = {"tiny": 3e-3, "small": 1.5e-3, "gpt2-124m": 6e-4}
GPU_MIN_BATCH_TOKENS = 65536  # below this a GPU step is launch-bound: warn
MAX_NOT_FINITE_STEPS = 3  # consecutive NaN/inf losses before training stops
# The most tokens one micro-batch holds when --micro-batch is 0 (activation memory).
MICRO_BATCH_TOKENS = {"cpu": 8192, "cuda": 32768}


class TrainError(ValueError):
    """A configuration that cannot train (the message says which option and why)."""


def knob(default, help: str, *, choices: tuple | None = None, in_key: bool = True):
    """A config field in the format of pipeline.knobs.knob (metadata "help", "in_key", "choices"),
    repeated here because model/ imports nothing from pipeline/: the pretrain stage uses
    TrainConfig as its config as is, so the CLI, Prefect and README derive its options."""
    meta = {"help": help, "in_key": in_key}
    if choices:
        meta["choices"] = choices
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    preset: str = knob("tiny", "Model size (model/gpt.py PRESETS); vocab_size comes from the tokenizer.",
                       choices=tuple(PRESETS))
    max_steps: int = knob(600, "Optimizer steps; the learning-rate schedule spans them.")
    stop_at: int = knob(0, "Stop after this step (0: at max_steps), keeping the schedule of max_steps; "
                           "continue later with --resume.")
    batch_tokens: int = knob(1024, "Tokens per optimizer step over all ranks (a multiple of seq_len × ranks); "
                                   "gradient accumulation makes up what one micro-batch does not hold. The default "
                                   "suits `tiny` on a CPU (more steps per token); GPU runs use ~0.5M.")
    micro_batch: int = knob(0, "Sequences per forward pass per rank (0: as many as fit in "
                               f"{MICRO_BATCH_TOKENS['cpu']} tokens on CPU, {MICRO_BATCH_TOKENS['cuda']} on GPU).")
    shuffle_tokens: int = knob(1 << 24, "Shuffle buffer of the loader, in tokens: windows of seq_len+1 tokens are "
                                        "read this many at a time from row groups in a seeded random order and "
                                        "handed out shuffled (memory: 4 bytes a token). 0: stored order, "
                                        "contiguous packing (docs/pretraining.md).")
    seq_len: int = knob(0, "Tokens per training sequence (0: the preset's block_size; otherwise it becomes block_size).")
    lr: float = knob(0.0, "Peak learning rate (0: the preset's: " + ", ".join(f"{k} {v:g}" for k, v in PRESET_LR.items()) + ").")
    min_lr_ratio: float = knob(0.1, "Final learning rate as a fraction of the peak.")
    warmup_steps: int = knob(10, "Steps of linear warmup from 0 to the peak learning rate.")
    schedule: str = knob("cosine", "After warmup: cosine decay, or warmup-stable-decay (constant, then linear decay).",
                         choices=("cosine", "wsd", "constant"))
    decay_fraction: float = knob(0.2, "wsd: the last fraction of max_steps that decays to the final rate.")
    weight_decay: float = knob(0.1, "AdamW weight decay on the linear layers' matrices (not norms or embeddings).")
    beta1: float = knob(0.9, "AdamW beta1.")
    beta2: float = knob(0.95, "AdamW beta2.")
    grad_clip: float = knob(1.0, "Clip the global gradient norm to this (0: no clipping).")
    eval_every: int = knob(50, "Validation loss every N steps, and at max_steps (0: only at max_steps).")
    eval_batches: int = knob(20, "Validation micro-batches per evaluation and rank (0: the whole val split).")
    log_every: int = knob(0, "Log the loss every N steps (0: every step on CPU, every 10 on GPU, where each log is a "
                             "host sync); metrics.jsonl then holds the mean loss of the N steps.", in_key=False)
    eval_benchmark: str = knob("", "A benchmark file (HellaSwag/MMLU/ARC/PIQA/LAMBADA JSONL, as `evaluate` reads) "
                                   "scored during training into metrics.jsonl and TensorBoard; its content, not "
                                   "this path, names the output.", in_key=False)
    eval_benchmark_every: int = knob(0, "Score --eval-benchmark every N steps, and at max_steps (0: only at max_steps).")
    checkpoint_every: int = knob(100, "Save a resumable checkpoint every N steps, and at the end (0: only at the end).",
                                 in_key=False)
    seed: int = knob(0, "Seed of the initial weights, the data order and dropout.")
    precision: str = knob("auto", "auto: bf16 autocast on GPU, float32 on CPU.", choices=("auto", "bf16", "fp32"))
    compile: str = knob("auto", "torch.compile the model (auto: on GPU only).", choices=("auto", "on", "off"),
                        in_key=False)
    device: str = knob("auto", "cuda, cpu, cuda:N (auto: the GPU when there is one).", in_key=False)
    cpu_threads: int = knob(0, "Threads of CPU math (0: torch's default, one per core; 1 is faster on cores "
                               "that other programs keep busy).", in_key=False)
    resume: str = knob("", "Continue from a checkpoint folder or pretrain artifact (its step, weights, optimizer "
                           "and data position); its files' digests, not this path, name the output.", in_key=False)
    resume_new_schedule: bool = knob(False, "With --resume: accept a max_steps, lr, schedule, batch or optimizer "
                                            "setting that differs from the checkpoint's (otherwise refused).",
                                     in_key=False)

    def check(self) -> None:
        for name in ("max_steps", "batch_tokens"):
            if getattr(self, name) < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("stop_at", "micro_batch", "seq_len", "warmup_steps", "eval_every", "eval_batches",
                     "checkpoint_every", "lr", "weight_decay", "grad_clip", "cpu_threads", "shuffle_tokens",
                     "log_every", "eval_benchmark_every"):
            if getattr(self, name) < 0:
                raise TrainError(f"--{name.replace('_', '-')} must not be negative")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise TrainError(f"--{f.name.replace('_', '-')} must be one of {', '.join(choices)}")
        if not 0 <= self.min_lr_ratio <= 1 or not 0 <= self.decay_fraction <= 1:
            raise TrainError("--min-lr-ratio and --decay-fraction must be between 0 and 1")

    def peak_lr(self) -> float:
        return self.lr or PRESET_LR.get(self.preset, 6e-4)


# Knobs a resumed run must share with its checkpoint: they shape the learning-rate schedule and the
# optimizer (changeable only with --resume-new-schedule) or the data order (never changeable).
SCHEDULE_KNOBS = ("max_steps", "lr", "schedule", "warmup_steps", "min_lr_ratio", "decay_fraction", "batch_tokens",
                  "weight_decay", "beta1", "beta2", "grad_clip")
DATA_ORDER_KNOBS = ("seed", "shuffle_tokens")


def check_resume(saved: dict, config: TrainConfig, checkpoint) -> None:
    """Refuse, in one line naming the options, a resume that would silently change the run."""
    default = TrainConfig()
    def value(cfg: dict, name: str):
        v = cfg.get(name, getattr(default, name))
        return TrainConfig(**{k: cfg.get(k, getattr(default, k)) for k in ("preset", "lr")}).peak_lr() \
            if name == "lr" else v
    mine = asdict(config)
    changed = lambda names: [n for n in names if value(saved, n) != value(mine, n)]  # noqa: E731
    flag = lambda n: "--" + n.replace("_", "-")  # noqa: E731
    if order := changed(DATA_ORDER_KNOBS):
        raise TrainError(f"{checkpoint}: " + ", ".join(f"{flag(n)} {value(mine, n)} differs from the checkpoint's "
                                                       f"{value(saved, n)}" for n in order) +
                         " (the data order cannot change on resume)")
    if (schedule := changed(SCHEDULE_KNOBS)) and not config.resume_new_schedule:
        raise TrainError(f"{checkpoint}: " + ", ".join(f"{flag(n)} {value(mine, n)} differs from the checkpoint's "
                                                       f"{value(saved, n)}" for n in schedule) +
                         "; use --stop-at to end early on the same schedule, or --resume-new-schedule to change it")


def batch_size_warning(config: TrainConfig, device_type: str) -> str | None:
    """A GPU step of few tokens spends its time launching kernels, and few documents a step make a
    noisy gradient: nanoGPT and nanochat use ~0.5M tokens a step on GPUs."""
    if device_type == "cuda" and config.batch_tokens < GPU_MIN_BATCH_TOKENS:
        return (f"--batch-tokens {config.batch_tokens} is far below what a GPU wants (>= {GPU_MIN_BATCH_TOKENS:,}; "
                "~524,288 in nanoGPT's GPT-2 runs): the GPU will idle and the gradient be noisy")
    return None
