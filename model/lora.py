"""LoRA (Hu et al. 2021): train a low-rank update B·A beside each chosen frozen matrix W.

    y = x Wᵀ + (alpha / rank) · x Aᵀ Bᵀ        A: (rank, in) random,  B: (out, rank) zeros

B starts at zero, so the adapted model starts exactly equal to the base model; only A and B (and
whatever the caller unfreezes, e.g. a classification head) get gradients and AdamW state, which is
where full fine-tuning spends most of its memory. Saved in PEFT's format (adapter_config.json +
adapter_model.safetensors under Llama's module names), so `PeftModel.from_pretrained(llama, folder)`
loads it onto the exported base model (model/export.py) and computes the same logits; `merge_lora`
folds B·A into W for an ordinary checkpoint. PyTorch only (no peft here): this runs on a bare GPU box.

    stats = apply_lora(model, rank=8, alpha=16)             # freezes the base, adds A and B
    ... train the parameters with requires_grad ...
    save_peft_adapter(model, "adapter/", "path/to/exported-base")
    merge_lora(model)                                       # a plain GPT again
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from model.checkpoint import replace_folder

# Short names accepted for the Llama projections a block has (PEFT's target_modules use the long ones).
TARGETS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
           "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
ADAM_BYTES_PER_PARAM = 8  # AdamW keeps two float32 moments (exp_avg, exp_avg_sq) per trained parameter
GRAD_BYTES_PER_PARAM = 4  # and a float32 gradient


class LoRAError(ValueError):
    """A LoRA setting or adapter the model cannot take; one line, for the user."""


class LoRALinear(nn.Module):
    """A frozen bias-free Linear plus its trainable low-rank update. The frozen matrix keeps the name
    `weight`, so the model's other state_dict keys do not change; A and B are Linears named
    `lora_A` / `lora_B`, as in PEFT, so `<module>.lora_A.weight` maps to PEFT's name by a prefix."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if base.bias is not None:
            raise LoRAError("LoRA here wraps bias-free Linears only (the GPT has no biases)")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Linear(self.in_features, rank, bias=False, device=device, dtype=dtype)
        self.lora_B = nn.Linear(rank, self.out_features, bias=False, device=device, dtype=dtype)
        # PEFT's default init: A as nn.Linear's own (Kaiming uniform, a=sqrt(5)), B zero.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        return self.weight + (self.lora_B.weight @ self.lora_A.weight) * self.scaling


def parse_targets(targets) -> tuple[str, ...]:
    """"q,k,v,o" or ("q_proj", "v") → ("q_proj", "v_proj"); "all" → every projection of a block."""
    if isinstance(targets, str):
        targets = list(TARGETS) if targets.strip() == "all" else [t.strip() for t in targets.split(",") if t.strip()]
    names = []
    for target in targets:
        name = TARGETS.get(target, target)
        if name not in TARGETS.values():
            raise LoRAError(f"unknown LoRA target {target!r}; choose among {', '.join(TARGETS)} (or all)")
        if name not in names:
            names.append(name)
    if not names:
        raise LoRAError("no LoRA targets given")
    return tuple(names)


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(model: nn.Module, rank: int, alpha: float = 16.0, targets=("q", "k", "v", "o"),
               dropout: float = 0.0, freeze: bool = True) -> dict:
    """Freeze every parameter of `model` (unless freeze=False) and wrap the target projections of
    every block in LoRALinear. Returns the figures the issue asks for: trainable and total
    parameters, and the AdamW (+ gradient) memory that training only the adapters saves against
    training everything. Unfreeze anything else (a classifier head) after this call."""
    if rank < 1:
        raise LoRAError(f"LoRA rank must be at least 1, got {rank}")
    names = parse_targets(targets)
    if lora_modules(model):
        raise LoRAError("the model already has LoRA adapters (merge_lora first)")
    total_before = sum(p.numel() for p in model.parameters())
    if freeze:
        for p in model.parameters():
            p.requires_grad_(False)
    # Every Linear whose attribute name is a target (q_proj of every layer's self_attn, ...).
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if child_name in names and isinstance(child, nn.Linear):
                setattr(parent, child_name, LoRALinear(child, rank, alpha, dropout))
    wrapped = lora_modules(model)
    if not wrapped:
        raise LoRAError(f"no module named {', '.join(names)} in the model")
    model.lora_config = {"rank": rank, "alpha": alpha, "targets": list(names), "dropout": dropout}
    return lora_stats(model, total_before)


def lora_stats(model: nn.Module, base_params: int | None = None) -> dict:
    """Trainable parameters against the base model's, and the optimizer memory that saves."""
    adapter = sum(p.numel() for m in lora_modules(model).values() for p in (m.lora_A.weight, m.lora_B.weight))
    total = sum(p.numel() for p in model.parameters())
    base = base_params if base_params is not None else total - adapter
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    full = ADAM_BYTES_PER_PARAM * base
    return {
        "lora_params": adapter, "trainable_params": trainable, "base_params": base, "total_params": total,
        "trainable_fraction": trainable / base,
        "optimizer_bytes": ADAM_BYTES_PER_PARAM * trainable,
        "optimizer_bytes_full": full,
        "optimizer_bytes_saved": full - ADAM_BYTES_PER_PARAM * trainable,
        "gradient_bytes_saved": GRAD_BYTES_PER_PARAM * (base - trainable),
    }


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors, under the model's own names (`layers.0.self_attn.q_proj.lora_A.weight`)."""
    return {f"{name}.{part}.weight": getattr(m, part).weight.detach().to("cpu").contiguous().clone()
            for name, m in lora_modules(model).items() for part in ("lora_A", "lora_B")}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put saved adapter tensors (lora_state_dict's names) into a model that apply_lora prepared."""
    own = {f"{name}.{part}": getattr(m, part) for name, m in lora_modules(model).items() for part in ("lora_A", "lora_B")}
    expected = {f"{k}.weight" for k in own}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise LoRAError(f"adapter does not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
    with torch.no_grad():
        for key, tensor in state.items():
            target = own[key.removesuffix(".weight")].weight
            if target.shape != tensor.shape:
                raise LoRAError(f"{key}: shape {tuple(tensor.shape)}, the model's {tuple(target.shape)}")
            target.copy_(tensor)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its matrix (W + scaling·B·A) and put plain Linears back: the model's
    state_dict is then the base model's again, loadable wherever a pretrain checkpoint is."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                plain = nn.Linear(child.in_features, child.out_features, bias=False,
                                  device=child.weight.device, dtype=child.weight.dtype)
                with torch.no_grad():
                    plain.weight.copy_(child.merged_weight())
                setattr(parent, child_name, plain)
    if hasattr(model, "lora_config"):
        del model.lora_config
    return model


# --------------------------------------------------------------------------------- PEFT's format

def peft_name(name: str) -> str:
    """Our adapter tensor name → PEFT's: Llama's module path (model/export.hf_name) under PEFT's
    `base_model.model.` wrapper, without the adapter's name ("default"), as PEFT saves it."""
    from model.export import hf_name

    return f"base_model.model.{hf_name(name)}"


def peft_config(model: nn.Module, base_model_name_or_path: str, task_type: str = "CAUSAL_LM",
                modules_to_save: list[str] | None = None) -> dict:
    config = getattr(model, "lora_config", None)
    if config is None:
        raise LoRAError("the model has no LoRA adapters to save")
    return {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": str(base_model_name_or_path),
        "r": config["rank"],
        "lora_alpha": config["alpha"],
        "lora_dropout": config["dropout"],
        "target_modules": sorted(config["targets"]),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,  # scaling alpha / r, not alpha / sqrt(r)
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": modules_to_save,
        "inference_mode": True,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def save_peft_adapter(model: nn.Module, out_dir: str | Path, base_model_name_or_path: str | Path,
                      task_type: str = "CAUSAL_LM", extra_tensors: dict[str, torch.Tensor] | None = None,
                      overwrite: bool = False) -> Path:
    """Write adapter_config.json and adapter_model.safetensors (built in a temporary folder, then
    renamed into place). `extra_tensors`: fully trained modules under PEFT's names (a classifier's
    `score.weight`, listed in modules_to_save)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    if out_dir.exists() and not (overwrite or (out_dir.is_dir() and not any(out_dir.iterdir()))):
        raise LoRAError(f"{out_dir}: already exists (choose a new folder, or --overwrite)")
    tensors = {peft_name(k): v for k, v in lora_state_dict(model).items()}
    modules_to_save = None
    if extra_tensors:
        tensors.update({f"base_model.model.{k}": v.detach().to("cpu").contiguous().clone()
                        for k, v in extra_tensors.items()})
        modules_to_save = sorted({k.rsplit(".", 1)[0] for k in extra_tensors})
    config = peft_config(model, base_model_name_or_path, task_type, modules_to_save)
    with replace_folder(out_dir) as tmp:
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file({k: v.float() for k, v in tensors.items()}, str(tmp / "adapter_model.safetensors"),
                  metadata={"format": "pt"})
    return out_dir


def load_peft_adapter(model: nn.Module, folder: str | Path) -> dict:
    """Apply an adapter in PEFT's format (ours, or one PEFT wrote for the exported model) to a GPT.
    Returns apply_lora's stats."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
        tensors = load_file(str(folder / "adapter_model.safetensors"))
    except (OSError, ValueError) as exc:
        raise LoRAError(f"{folder}: not a PEFT adapter folder ({exc})") from None
    if config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("use_rslora") \
            or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise LoRAError(f"{folder}: only plain LoRA adapters (no DoRA, rsLoRA or per-module ranks)")
    targets = config["target_modules"]
    stats = apply_lora(model, int(config["r"]), float(config["lora_alpha"]),
                       targets if isinstance(targets, list) else parse_targets(targets))
    ours = {}
    for name in lora_state_dict(model):
        key = peft_name(name)
        if key not in tensors:  # PEFT also writes `.default` in front of .weight in some versions
            key = key.replace(".weight", ".default.weight")
        if key not in tensors:
            raise LoRAError(f"{folder}: no tensor for {peft_name(name)}")
        ours[name] = tensors[key]
    load_lora_state_dict(model, ours)
    return stats
