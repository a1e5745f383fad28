"""Checkpoints: folders that load without unpickling anything.

A checkpoint folder (and a pretrain artifact, which holds the last one) contains
- `model.safetensors`: the GPT's state_dict (float32);
- `optimizer.safetensors`: AdamW's per-parameter tensors, named `<param index>.<name>`
  (`exp_avg`, `exp_avg_sq`, `step`); the param groups' hyper-parameters are in config.json;
- `config.json`, written last: {"format", "model": asdict(GPTConfig), "step", "tokens_seen",
  "train": the TrainConfig, "loader": one TokenStream state per rank, "optimizer":
  {"param_groups": [...]}, "data": the token files it trained on}. No RNG state: training
  re-seeds from (seed, rank, step) at every step, so a resumed run needs none;
- `tokenizer.json` (a copy) and `metrics.jsonl` (the steps so far, for a continuous curve).

`save_checkpoint` writes into a hidden temp folder and renames it to `step-NNNNNNN`, so a
`kill -9` at any moment leaves the previous checkpoint complete; `latest_checkpoint` picks the
newest complete one. Only safetensors and JSON are ever read back."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.gpt import GPT, GPTConfig

FORMAT = 1
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "config.json")
MODEL_FILES = ("model.safetensors", "config.json")


class CheckpointError(ValueError):
    """A path that is not a usable checkpoint; the message says which and why."""


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """AdamW's state as flat named tensors plus JSON-able param groups (without the params)."""
    tensors: dict[str, torch.Tensor] = {}
    groups = []
    index = 0
    for group in optimizer.param_groups:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"}
                      | {"n_params": len(group["params"])})
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    tensors[f"{index}.{name}"] = value.detach().to("cpu").contiguous().reshape(value.shape or (1,))
                    if value.dim() == 0:
                        tensors[f"{index}.{name}.scalar"] = torch.zeros(0)  # marks a 0-dim tensor
                else:  # a plain number (old torch kept `step` as a float)
                    tensors[f"{index}.{name}"] = torch.tensor([float(value)], dtype=torch.float64)
                    tensors[f"{index}.{name}.number"] = torch.zeros(0)
            index += 1
    return tensors, groups


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if len(groups) != len(optimizer.param_groups) or \
            [g["n_params"] for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
        raise CheckpointError("optimizer state does not match the model's parameter groups")
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        if name.endswith(".scalar") or name.endswith(".number"):
            continue
        i = int(index)
        if f"{key}.scalar" in tensors:
            value = value.reshape(())
        elif f"{key}.number" in tensors:
            value = float(value.item())
        elif value.shape != params[i].shape:
            raise CheckpointError(f"optimizer tensor {key} has shape {tuple(value.shape)}, "
                                  f"the parameter {tuple(params[i].shape)}")
        state.setdefault(i, {})[name] = value
    saved_groups = []
    for group, current in zip(groups, optimizer.state_dict()["param_groups"]):
        restored = {k: (tuple(v) if k == "betas" else v) for k, v in group.items() if k != "n_params"}
        saved_groups.append(restored | {"params": current["params"]})
    optimizer.load_state_dict({"state": state, "param_groups": saved_groups})


@contextmanager
def replace_folder(output: Path):
    """Yield a temp folder beside `output`; on success it replaces `output` whole, on any error it is
    removed. A reader never sees a half-written folder under the final name."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        yield tmp
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def save_checkpoint(folder: Path, model: GPT, optimizer: torch.optim.Optimizer, meta: dict,
                    tokenizer_path: Path | None = None, metrics_path: Path | None = None, keep: int = 1) -> Path:
    """Write `<folder>/step-NNNNNNN/` atomically (temp folder, then rename) and drop older ones
    beyond `keep`. `meta` holds everything JSON (step, loader states, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{int(meta['step']):07d}"
    tmp = folder / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tensors, groups = optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        if tokenizer_path is not None:
            shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")
        if metrics_path is not None and Path(metrics_path).exists():
            shutil.copyfile(metrics_path, tmp / "metrics.jsonl")
        config = {"format": FORMAT, "model": asdict(model.config), **meta, "optimizer": {"param_groups": groups}}
        write_json_atomic(tmp / "config.json", config)
        if final.exists():  # the same step again (a rerun): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    older = sorted(p for p in folder.glob("step-*") if p.is_dir() and p != final and is_checkpoint(p))
    for old in older[:max(0, len(older) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def is_checkpoint(path: Path, files=CHECKPOINT_FILES) -> bool:
    return all((Path(path) / f).is_file() for f in files)


def latest_checkpoint(path: str | Path, files=CHECKPOINT_FILES) -> Path:
    """`path` itself if it is a checkpoint (or a pretrain artifact), else the newest complete
    `step-*` folder in it or in its `checkpoints/` folder."""
    path = Path(path)
    candidates = [p for p in (path,) if is_checkpoint(p, files)]
    for folder in (path, path / "checkpoints"):
        if folder.is_dir():
            candidates += [p for p in folder.glob("step-*") if p.is_dir() and is_checkpoint(p, files)]
    if not candidates:
        raise CheckpointError(f"{path}: no checkpoint here (needs {', '.join(files)})")
    return max(candidates, key=lambda p: (read_config(p).get("step", 0), p == path))


def read_config(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder}/config.json: unreadable ({exc})") from None


def checkpoint_files(path: str | Path) -> list[Path]:
    """The files of the checkpoint `path` resolves to (their digests name a resumed run)."""
    folder = latest_checkpoint(path)
    return [folder / f for f in CHECKPOINT_FILES]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, Path | None, dict]:
    """A pretrain artifact or checkpoint folder → (GPT in eval mode, its tokenizer.json or None, config.json)."""
    folder = latest_checkpoint(path, MODEL_FILES)
    meta = read_config(folder)
    model = GPT(GPTConfig(**meta["model"]))
    state = load_file(str(folder / "model.safetensors"), device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{folder}/model.safetensors does not fit its config: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    model.to(device).eval()
    tokenizer = folder / "tokenizer.json"
    return model, (tokenizer if tokenizer.is_file() else None), meta


def load_training_state(folder: Path, model: GPT, optimizer: torch.optim.Optimizer) -> dict:
    """Restore weights and optimizer in place from a checkpoint folder; return its config.json."""
    meta = read_config(folder)
    if GPTConfig(**meta["model"]) != model.config:
        raise CheckpointError(f"{folder}: the checkpoint's model config differs from this run's "
                              f"({meta['model']} vs {asdict(model.config)})")
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device="cpu"))
    load_optimizer_tensors(optimizer, load_file(str(folder / "optimizer.safetensors"), device="cpu"),
                           meta["optimizer"]["param_groups"])
    return meta
