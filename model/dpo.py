"""Direct Preference Optimization (Rafailov et al. 2023), with one model in memory.

For a prompt x, a preferred answer y_w and a rejected one y_l, with log π(y|x) summed over the
answer's tokens (its <|assistant_end|> included: stopping is part of the answer):

    loss = −log σ( β · [ (log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x)) ] )

The reference π_ref is the model we start from, frozen. Instead of keeping a second copy of it in
memory, its log-probabilities of every chosen and rejected answer are computed **once**, before the
first update, and stored (reference_logps.parquet in the artifact): one model in memory, and the
reference pass is not repeated every epoch. The implicit rewards β·(log π − log π_ref) give the
figures DPO is judged by: reward accuracy (chosen reward > rejected reward) and reward margin on
held-out pairs, before training (both 0: the policy *is* the reference) and after. Beside them,
the plain preference accuracy log π(y_w|x) > log π(y_l|x), which is meaningful before training too.

Data: {"prompt", "chosen", "rejected"}, each a string or a list of chat messages (TRL's
conversational form); strings become a user turn and an assistant turn. Rendering is the chat
template of model/chat.py, so DPO trains on exactly what chat and sft see. PyTorch only.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


class DPOError(ValueError):
    """A data file or setting DPO cannot use; one line naming the file and what is wrong."""


# ------------------------------------------------------------------------------------------ data

@dataclass
class PreferencePair:
    chosen: list[int]  # token ids of prompt + chosen answer
    chosen_start: int  # the answer's tokens are chosen[chosen_start:]
    rejected: list[int]
    rejected_start: int
    where: str = ""


def read_preferences(path: str | Path) -> list[tuple[str, list[dict], list[dict], list[dict]]]:
    """(where, prompt messages, chosen messages, rejected messages) of each record of a JSONL / JSON
    file; one line DPOError for anything else."""
    from model.chat import ChatDataError, _messages, check_conversation, read_records

    try:
        records = read_records(path)
    except ChatDataError as exc:
        raise DPOError(str(exc)) from None
    if not records:
        raise DPOError(f"{path}: no records")
    out = []
    for where, record in records:
        if not isinstance(record, dict):
            raise DPOError(f"{where}: expected an object with prompt, chosen and rejected")
        missing = [f for f in ("prompt", "chosen", "rejected") if f not in record]
        if missing:
            keys = ", ".join(sorted(map(str, record))[:6]) or "none"
            raise DPOError(f"{where}: no {', '.join(repr(m) for m in missing)} (fields: {keys}); preference data "
                           "has 'prompt', 'chosen' and 'rejected'")
        try:
            prompt = _messages(record["prompt"], where, "prompt", "user")
            chosen = _messages(record["chosen"], where, "chosen", "assistant")
            rejected = _messages(record["rejected"], where, "rejected", "assistant")
            if prompt[-1]["role"] != "user":
                raise ChatDataError(f"{where}: the prompt must end with a user message")
            for answer, name in ((chosen, "chosen"), (rejected, "rejected")):
                if any(m["role"] != "assistant" for m in answer):
                    raise ChatDataError(f"{where}: '{name}' must hold assistant messages only")
                check_conversation(prompt + answer, where)
        except ChatDataError as exc:
            raise DPOError(str(exc)) from None
        if chosen == rejected:
            raise DPOError(f"{where}: 'chosen' and 'rejected' are the same answer")
        out.append((where, prompt, chosen, rejected))
    return out


def encode_pairs(tokenizer, records, max_len: int) -> tuple[list[PreferencePair], int]:
    """Render each record with the chat template; pairs longer than max_len are left out (counted)."""
    from model.chat import render_chat

    pairs, too_long = [], 0
    for where, prompt, chosen, rejected in records:
        prompt_ids = render_chat(tokenizer, prompt, add_generation_prompt=True)[0]
        start = len(prompt_ids)
        ids_w = render_chat(tokenizer, prompt + chosen)[0]
        ids_l = render_chat(tokenizer, prompt + rejected)[0]
        if ids_w[:start] != prompt_ids or ids_l[:start] != prompt_ids:  # the template renders turn by turn
            raise DPOError(f"{where}: the prompt does not render as a prefix of prompt + answer")
        if max(len(ids_w), len(ids_l)) > max_len:
            too_long += 1
            continue
        pairs.append(PreferencePair(ids_w, start, ids_l, start, where))
    return pairs, too_long


# ------------------------------------------------------------------------------------ log-probs

def sequence_logps(model, rows: list[tuple[list[int], int]], pad_id: int) -> torch.Tensor:
    """Σ log p(token | tokens before it) over each row's answer tokens (ids[start:]), (N,) float32.
    Rows are right-padded: a causal model's real positions never see the pads."""
    device = next(model.parameters()).device
    longest = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    answer = torch.zeros((len(rows), longest), dtype=torch.bool)
    for i, (row, start) in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        answer[i, start:len(row)] = True
    ids, answer = ids.to(device), answer.to(device)
    logits, _ = model(ids[:, :-1])
    logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (logps * answer[:, 1:]).sum(-1)


def pair_logps(model, pairs: list[PreferencePair], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the chosen and the rejected answers of a batch of pairs, in one forward pass."""
    rows = [(p.chosen, p.chosen_start) for p in pairs] + [(p.rejected, p.rejected_start) for p in pairs]
    both = sequence_logps(model, rows, pad_id)
    return both[:len(pairs)], both[len(pairs):]


def answer_logps(model, pairs: list[PreferencePair], pad_id: int, batch_size: int = 8) -> torch.Tensor:
    """(N, 2) log-probs [chosen, rejected] of every pair under the model as it is now (no gradients)."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chosen, rejected = pair_logps(model, pairs[start:start + batch_size], pad_id)
            out.append(torch.stack([chosen, rejected], dim=1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 2)


def reference_logps(model, pairs: list[PreferencePair], pad_id: int, batch_size: int = 8) -> torch.Tensor:
    """The reference: the starting model's log-probs of every answer. Called once, before training;
    the result is stored, so DPO needs no second (reference) model in memory."""
    return answer_logps(model, pairs, pad_id, batch_size)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair sigmoid DPO loss and the implicit rewards β·(log π − log π_ref) of both answers."""
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards, rejected_rewards


def preference_metrics(model, pairs: list[PreferencePair], reference: torch.Tensor, pad_id: int, beta: float,
                       batch_size: int = 8) -> dict:
    """Loss, reward accuracy and margin, and the plain log-prob preference accuracy on held-out pairs."""
    if not pairs:
        return {}
    return metrics_from_logps(answer_logps(model, pairs, pad_id, batch_size), reference, beta)


def metrics_from_logps(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> dict:
    """The figures of (N, 2) [chosen, rejected] log-probs of the policy against the reference's."""
    losses, chosen_r, rejected_r = dpo_loss(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1], beta)
    return {"pairs": len(policy), "loss": float(losses.mean()),
            "reward_accuracy": float((chosen_r > rejected_r).float().mean()),
            "reward_margin": float((chosen_r - rejected_r).mean()),
            "chosen_reward": float(chosen_r.mean()), "rejected_reward": float(rejected_r.mean()),
            "logp_accuracy": float((policy[:, 0] > policy[:, 1]).float().mean()),
            "chosen_logp": float(policy[:, 0].mean()), "rejected_logp": float(policy[:, 1].mean())}


# -------------------------------------------------------------------------------------- training

@dataclass
class DPOTrainConfig:
    beta: float = 0.1
    lr: float = 5e-6
    epochs: int = 1
    max_steps: int = 0
    batch_size: int = 8
    warmup_steps: int = 5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0


def train_dpo(model, train: list[PreferencePair], reference: torch.Tensor, config: DPOTrainConfig, pad_id: int,
              metrics_path: Path | None = None, progress: bool = True) -> dict:
    """DPO updates of `model` (its parameters with requires_grad) against stored reference log-probs
    (one row per pair of `train`, from reference_logps)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = config.max_steps or config.epochs * steps_per_epoch
    rng = random.Random(config.seed)
    order: list[int] = []
    device = next(model.parameters()).device
    bar = _progress(total, progress)
    metrics = open(metrics_path, "w") if metrics_path else None
    history, started, seen = [], time.time(), 0
    model.train()
    try:
        for step in range(total):
            if len(order) < min(config.batch_size, len(train)):
                fresh = list(range(len(train)))
                rng.shuffle(fresh)
                order += fresh
            batch, order = order[:config.batch_size], order[config.batch_size:]
            lr = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))  # warmup, then constant (as TRL's default)
            for group in optimizer.param_groups:
                group["lr"] = lr
            chosen, rejected = pair_logps(model, [train[i] for i in batch], pad_id)
            ref = reference[batch].to(device)
            losses, chosen_r, rejected_r = dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], config.beta)
            loss = losses.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            seen += sum(len(train[i].chosen) + len(train[i].rejected) for i in batch)
            row = {"step": step + 1, "loss": loss.item(), "lr": lr, "tokens": seen,
                   "reward_accuracy": float((chosen_r > rejected_r).float().mean()),
                   "reward_margin": float((chosen_r - rejected_r).detach().mean())}
            history.append(row)
            if metrics:
                metrics.write(json.dumps(row) + "\n")
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.4f}", margin=f"{row['reward_margin']:.3f}", refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if metrics:
            metrics.close()
    model.eval()
    return {"steps": total, "epochs": total / steps_per_epoch, "pairs": len(train),
            "first_loss": history[0]["loss"] if history else None, "last_loss": history[-1]["loss"] if history else None,
            "seconds": time.time() - started}


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="step", desc="dpo", file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 10.0)
