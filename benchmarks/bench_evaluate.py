"""Speed of `evaluate` on CPU: multiple-choice items/s and held-out tokens/s.

    .venv/bin/python benchmarks/bench_evaluate.py --tokens TOKENIZE_ARTIFACT [--preset tiny] [--items 2000]
        [--threads 2] [--out benchmarks/bench_evaluate.json]

The model is the preset's GPT with random weights and the artifact's vocabulary (speed does not
depend on the weights). The items are the crawl-made task (`scratchlm make-benchmark`) from the
artifact's train split, 24 words of context and 4 endings of 12 words, repeated to --items. Timed:
our batched scorer at several batch sizes, and the naive way (one request at a time, full
forward, log-softmax over every position) on a sample, as the baseline. Also the held-out
loss/bits-per-byte pass in tokens/s. Best of --repeats runs each."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", required=True, help="A tokenize artifact (its tokenizer and train documents).")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vocab-size", type=int, default=0,
                        help="Model vocabulary (0: the tokenizer's); e.g. 32768, the default tokenizer size, to time "
                             "its LM head with a smaller artifact's tokenizer.")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--naive-items", type=int, default=100, help="Items timed for the naive baseline.")
    parser.add_argument("--val-tokens", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from tokenizers import Tokenizer

    from model.benchmarks import ChoiceItem, ContinuationTaskConfig, continuation_items, read_held_out_documents
    from model.evaluate import EOT_TOKEN, TARGET_DELIMITER, encode_pair, evaluate_held_out, score_multiple_choice
    from model.gpt import GPT, config_from_preset

    torch.set_num_threads(args.threads)
    folder = Path(args.tokens)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    made = continuation_items(read_held_out_documents([folder], "train"),
                              ContinuationTaskConfig(items=args.items, per_document=0))
    items = [ChoiceItem(m["ctx"], m["endings"], m["label"]) for m in made]
    items = (items * (args.items // len(items) + 1))[:args.items]
    torch.manual_seed(0)
    vocab_size = max(args.vocab_size, tokenizer.get_vocab_size())
    model = GPT(config_from_preset(args.preset, vocab_size)).eval()
    eot = tokenizer.token_to_id(EOT_TOKEN)
    requests = [encode_pair(tokenizer, i.context, TARGET_DELIMITER + c, eot) for i in items for c in i.choices]
    tokens_per_request = sum(len(c) + len(x) for c, x in requests) / len(requests)

    def best(fn):
        """(wall seconds, CPU seconds of this process) of the fastest of --repeats runs."""
        times = []
        for _ in range(args.repeats):
            started, cpu = time.perf_counter(), time.process_time()
            fn()
            times.append((time.perf_counter() - started, time.process_time() - cpu))
        return min(times)

    results = {"preset": args.preset, "params": model.num_params(), "vocab_size": vocab_size,
               "threads": args.threads, "items": len(items), "choices_per_item": 4,
               "tokens_per_request": round(tokens_per_request, 1), "load_avg_1m": os.getloadavg()[0], "batched": {},
               "command": " ".join([Path(sys.executable).name] + sys.argv)}
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        seconds, cpu = best(lambda: score_multiple_choice(model, tokenizer, items, batch_size))
        results["batched"][batch_size] = {"seconds": round(seconds, 2), "items_per_s": round(len(items) / seconds, 1),
                                          "cpu_seconds": round(cpu, 2), "items_per_cpu_s": round(len(items) / cpu, 1)}
        print(f"batched, batch {batch_size}: {len(items)} items in {seconds:.1f} s = {len(items) / seconds:.0f} items/s "
              f"({len(items) / cpu:.0f} per CPU-second)", flush=True)

    naive_requests = requests[:4 * args.naive_items]

    @torch.inference_mode()
    def naive():
        for context, continuation in naive_requests:
            whole = (context + continuation)[-(model.config.block_size + 1):]
            logits, _ = model(torch.tensor([whole[:-1]]))
            logprobs = F.log_softmax(logits.float(), dim=-1)[0, -len(continuation):]
            logprobs.gather(1, torch.tensor(continuation)[:, None]).sum()

    seconds, cpu = best(naive)
    n = len(naive_requests) // 4
    results["naive"] = {"items": n, "seconds": round(seconds, 2), "items_per_s": round(n / seconds, 1),
                        "cpu_seconds": round(cpu, 2), "items_per_cpu_s": round(n / cpu, 1)}
    print(f"naive (one request at a time, full logits): {n} items in {seconds:.1f} s = {n / seconds:.0f} items/s "
          f"({n / cpu:.0f} per CPU-second)", flush=True)

    if vocab_size != tokenizer.get_vocab_size():
        if args.out:
            args.out.write_text(json.dumps(results, indent=2) + "\n")
        return  # the held-out pass needs the tokenizer's own vocabulary (unigram counts, byte lengths)
    parts = sorted(folder.glob("part-*.parquet"))
    started, cpu = time.perf_counter(), time.process_time()
    held = evaluate_held_out(model, parts, tokenizer, "train", args.val_tokens, batch_size=8, show_progress=False)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    results["held_out"] = {"tokens": held["tokens"], "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                           "tokens_per_s": round(held["tokens"] / seconds), "tokens_per_cpu_s": round(held["tokens"] / cpu),
                           "includes": "unigram counts of the train split"}
    print(f"held-out loss/bpb: {held['tokens']} tokens in {seconds:.1f} s = {held['tokens'] / seconds:.0f} tokens/s "
          f"({held['tokens'] / cpu:.0f} per CPU-second)")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
