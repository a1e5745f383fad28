"""CPU training speed of our GPT against transformers' LlamaForCausalLM, side by side in one run.

Both models are the same network (the `tiny` preset; Llama is built from `config.llama_config_kwargs()`
and loaded with our initial weights), trained on the same random batches with the same AdamW
(float32, no weight decay on gains and embeddings). One step = forward + loss + backward + AdamW step +
zero_grad. After warm-up steps for each, the timed steps run in interleaved rounds (ours, Llama,
Llama, ours, ...), so a neighbour's load on this shared machine hits both alike. Each round is timed
twice: wall clock (tokens/s) and this process's CPU time (tokens per CPU-second: with --threads 1 it
barely moves when other processes compete for the cores, as the wall clock does). The best round of
each model counts (the median is printed too); the ratio is also taken round by round (ours over the
Llama round next to it) and its median reported. Achieved FLOP/s = tokens/s × GPT.flops_per_token.

    .venv/bin/python benchmarks/bench_model_cpu.py                     # 2 threads, ~1 min on 2 idle cores
    .venv/bin/python benchmarks/bench_model_cpu.py --threads 1 --batch 4   # one core: robust on a busy machine
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from model.export import llama_model  # noqa: E402
from model.gpt import GPT, config_from_preset  # noqa: E402


def llama_groups(llama, weight_decay: float) -> list[dict]:
    """The same split as GPT.optimizer_groups: decay on the linear layers' matrices only."""
    embedding = llama.model.embed_tokens.weight
    params = list(llama.parameters())  # tied weights appear once
    return [
        {"params": [p for p in params if p.dim() >= 2 and p is not embedding], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2 or p is embedding], "weight_decay": 0.0},
    ]


def make_stepper(name: str, model, optimizer):
    if name == "ours":
        def loss_of(x, y):
            return model(x, targets=y)[1]
    else:
        def loss_of(x, y):
            # shift_labels: y is already the next token, as for ours (no internal shift, same T targets)
            return model(input_ids=x, labels=y, shift_labels=y).loss

    def step(x, y) -> float:
        loss = loss_of(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vocab", type=int, default=32768, help="the train-tokenizer stage's default")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=0, help="0 → the preset's block_size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps-per-round", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 → torch's default")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "model_cpu_results.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    config = config_from_preset(args.preset, vocab_size=args.vocab)
    seq_len = args.seq_len or config.block_size
    torch.manual_seed(0)
    ours = GPT(config).train()
    llama = llama_model(ours).train()
    steppers = {
        "ours": make_stepper("ours", ours, torch.optim.AdamW(ours.optimizer_groups(0.1), lr=1e-3)),
        "transformers Llama (sdpa)": make_stepper(
            "llama", llama, torch.optim.AdamW(llama_groups(llama, 0.1), lr=1e-3)),
    }
    flops_per_token = ours.flops_per_token(seq_len)
    tokens_per_step = args.batch * seq_len
    data = torch.Generator().manual_seed(1)

    def batch():
        xy = torch.randint(0, config.vocab_size, (args.batch, seq_len + 1), generator=data)
        return xy[:, :-1].contiguous(), xy[:, 1:].contiguous()

    # Same weights, same first batch: the first losses must agree (the two really are one network).
    x, y = batch()
    first = {name: step(x, y) for name, step in steppers.items()}
    for name, step in steppers.items():
        for _ in range(args.warmup - 1):
            step(*batch())

    round_rates: dict[str, list[float]] = {name: [] for name in steppers}  # tokens per wall second
    round_cpu_rates: dict[str, list[float]] = {name: [] for name in steppers}  # tokens per CPU second
    for r in range(args.rounds):
        order = list(steppers.items())
        for name, step in (order if r % 2 == 0 else order[::-1]):  # alternate who goes first
            batches = [batch() for _ in range(args.steps_per_round)]
            start, start_cpu = time.perf_counter(), time.process_time()
            for x, y in batches:
                step(x, y)
            wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            round_rates[name].append(tokens_per_step * args.steps_per_round / wall)
            round_cpu_rates[name].append(tokens_per_step * args.steps_per_round / cpu)

    rows = []
    for name in steppers:
        best, median = max(round_rates[name]), statistics.median(round_rates[name])
        rows.append({
            "model": name, "tokens_per_s": best, "tokens_per_s_median": median,
            "achieved_gflops": best * flops_per_token / 1e9, "first_loss": first[name],
            "tokens_per_cpu_s": max(round_cpu_rates[name]),
            "tokens_per_cpu_s_median": statistics.median(round_cpu_rates[name]),
            "round_tokens_per_s": round_rates[name], "round_tokens_per_cpu_s": round_cpu_rates[name],
        })
    ratio = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
    ratio_median = rows[0]["tokens_per_s_median"] / rows[1]["tokens_per_s_median"]
    ours_rates, llama_rates = round_rates.values()
    ratio_paired = statistics.median(a / b for a, b in zip(ours_rates, llama_rates))
    ours_cpu, llama_cpu = round_cpu_rates.values()
    ratio_cpu = rows[0]["tokens_per_cpu_s"] / rows[1]["tokens_per_cpu_s"]
    ratio_cpu_paired = statistics.median(a / b for a, b in zip(ours_cpu, llama_cpu))

    print(f"preset {args.preset}: {ours.num_params() / 1e6:.2f}M parameters, "
          f"{flops_per_token / 1e6:.1f} MFLOP per token trained, vocab {config.vocab_size}, "
          f"batch {args.batch} x {seq_len} tokens, float32, AdamW; {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'model':28} {'tokens/s':>10} {'(median)':>10} {'GFLOP/s':>9} {'tok/CPU-s':>10} {'(median)':>10} "
          f"{'first loss':>11}")
    for r in rows:
        print(f"{r['model']:28} {r['tokens_per_s']:10.0f} {r['tokens_per_s_median']:10.0f} "
              f"{r['achieved_gflops']:9.1f} {r['tokens_per_cpu_s']:10.0f} {r['tokens_per_cpu_s_median']:10.0f} "
              f"{r['first_loss']:11.5f}")
    print(f"ours / transformers, wall clock: {ratio:.2f}x best round, {ratio_median:.2f}x median round, "
          f"{ratio_paired:.2f}x median of round-by-round ratios")
    print(f"ours / transformers, CPU time:   {ratio_cpu:.2f}x best round, {ratio_cpu_paired:.2f}x median of "
          f"round-by-round ratios")

    import transformers
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "preset": args.preset, "config": vars(config) | {"head_dim": config.head_dim},
        "batch": args.batch, "seq_len": seq_len, "dtype": "float32", "flops_per_token": flops_per_token,
        "warmup_steps": args.warmup, "rounds": args.rounds, "steps_per_round": args.steps_per_round,
        "results": rows, "ratio_best": ratio, "ratio_median": ratio_median,
        "ratio_paired_median": ratio_paired, "ratio_cpu_time_best": ratio_cpu,
        "ratio_cpu_time_paired_median": ratio_cpu_paired,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0]},
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
