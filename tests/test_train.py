"""Pretraining on the CPU (model/train.py, model/checkpoint.py, the pretrain stage) on a real small
corpus: Jane Austen's paragraphs, tokenized by a BPE trained with HF tokenizers (tests/token_corpus.py).
Sizes are tiny (seq_len 32, 512 tokens a step) so the whole file runs in about a minute on 2 cores."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import latest_checkpoint, load_model, load_training_state
from model.data import TokenStream, open_token_artifact
from model.gpt import GPT, config_from_preset
from model.train import Runtime, TrainConfig, lr_at, make_optimizer, train, train_step, validation_loss
from token_corpus import build_token_artifact

REPO = Path(__file__).resolve().parent.parent
STEPS = 24


def small(**overrides) -> TrainConfig:
    """tiny preset, 32-token sequences, 512 tokens a step in 2 micro-batches of 8 sequences."""
    base = dict(preset="tiny", seq_len=32, batch_tokens=512, micro_batch=8, max_steps=STEPS, warmup_steps=4,
                lr=3e-3, eval_every=12, eval_batches=4, checkpoint_every=0, device="cpu")
    return TrainConfig(**(base | overrides))


def read_metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 OpenMP threads on 2 busy shared cores are ~10x slower than one
    yield build_token_artifact(tmp_path_factory.mktemp("tokens"), parts=2, row_group_docs=64)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def full_run(artifact, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    summary = train(small(), artifact, out, progress=False)
    return out, summary, read_metrics(out)


def test_loss_decreases_and_every_step_is_logged(full_run):
    out, summary, rows = full_run
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for r in rows:
        assert {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "flops_per_s", "mfu"} <= set(r)
        assert r["mfu"] is None and r["flops_per_s"] > 0  # a CPU has no peak in the table: achieved FLOP/s
    assert [r["step"] for r in rows if r.get("val_loss") is not None] == [12, 24]
    uniform = math.log(512)
    first, last = rows[0]["loss"], sum(r["loss"] for r in rows[-4:]) / 4
    assert abs(first - uniform) < 0.3  # starts near-uniform ...
    assert last < first - 0.8  # ... and learns
    val = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    assert val[1] < val[0] < uniform - 0.5
    assert summary["first_loss"] == first and summary["val_loss"] == val[1]
    assert summary["tokens_seen"] == STEPS * 512 and summary["grad_accumulation"] == 2
    # the schedule: linear warmup to the peak, cosine down to min_lr_ratio at the last step
    lrs = [r["lr"] for r in rows]
    assert lrs[0] == pytest.approx(3e-3 / 4) and lrs[3] == pytest.approx(3e-3) and lrs[-1] == pytest.approx(3e-4)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_events_hold_the_logged_scalars(full_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, rows = full_run
    events = list(out.glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    logged = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert logged == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in rows]
    assert [e.step for e in acc.Scalars("val/loss")] == [12, 24]


def test_schedules():
    wsd = small(schedule="wsd", max_steps=100, warmup_steps=10, decay_fraction=0.2, lr=1e-3)
    assert lr_at(5, wsd) == pytest.approx(5e-4)
    assert lr_at(10, wsd) == lr_at(50, wsd) == lr_at(80, wsd) == pytest.approx(1e-3)
    assert lr_at(90, wsd) == pytest.approx(1e-3 - 0.5 * 0.9e-3) and lr_at(100, wsd) == pytest.approx(1e-4)
    cosine = dataclasses.replace(wsd, schedule="cosine")
    assert lr_at(55, cosine) == pytest.approx(1e-4 + 0.9e-3 * 0.5)


def test_resume_gives_bit_identical_losses(full_run, artifact, tmp_path):
    out_full, _, full = full_run
    first = tmp_path / "first"
    train(small(stop_at=10, checkpoint_every=4), artifact, first, progress=False)
    # only the newest checkpoint is kept, and it is complete
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == ["step-0000010"]
    assert json.loads((first / "config.json").read_text())["step"] == 10
    second = tmp_path / "second"
    summary = train(small(resume=str(first)), artifact, second, progress=False)
    assert summary["resumed_from"] == 10 and summary["first_loss"] == full[0]["loss"]
    resumed = read_metrics(second)
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))  # the curve continues the first run's
    for a, b in zip(full, resumed):
        assert (a["step"], a["loss"], a["grad_norm"], a.get("val_loss")) == \
               (b["step"], b["loss"], b["grad_norm"], b.get("val_loss"))  # exact, not approximate
    final_full, final_resumed = load_file(out_full / "model.safetensors"), load_file(second / "model.safetensors")
    assert all(torch.equal(final_full[k], final_resumed[k]) for k in final_full)


def test_checkpoints_are_safetensors_and_json_and_load_without_pickle(full_run, artifact):
    out, summary, rows = full_run
    for path in out.iterdir():
        if path.is_file() and path.suffix in (".safetensors", ".json", ".jsonl"):
            head = path.read_bytes()[:2]
            assert head[:1] != b"\x80" and head != b"PK", f"{path.name} looks like a pickle / torch.save file"
    meta = json.loads((out / "config.json").read_text())
    assert meta["step"] == STEPS and meta["model"]["vocab_size"] == 512
    assert len(meta["loader"]) == 1 and {"epoch", "unit", "doc", "offset", "buffer", "window"} <= set(meta["loader"][0])
    assert "rng" not in meta  # steps re-seed from (seed, rank, step): no RNG stream is saved, none needed
    optimizer = load_file(out / "optimizer.safetensors")
    assert any(k.endswith(".exp_avg_sq") for k in optimizer)
    model, tokenizer_path, loaded_meta = load_model(out)
    assert tokenizer_path == out / "tokenizer.json" and loaded_meta["step"] == STEPS
    files, _, _, eot = open_token_artifact(artifact)
    # the loaded weights reproduce the validation loss the run logged at its last step
    again = validation_loss(model, files, 32, 8, eot, Runtime(), max_batches=4, seed=0)
    assert again == pytest.approx(rows[-1]["val_loss"], abs=1e-6)


KILL_SCRIPT = """
import sys, torch
from pathlib import Path
from model.gpt import GPT, config_from_preset
from model.train import TrainConfig, make_optimizer
from model.checkpoint import save_checkpoint
torch.manual_seed(0)
model = GPT(config_from_preset("tiny", 512))
optimizer = make_optimizer(model, TrainConfig(), torch.device("cpu"))
model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))[1].backward()
optimizer.step()
step = 0
while True:
    step += 1
    save_checkpoint(Path(sys.argv[1]), model, optimizer, {"step": step, "loader": [], "tokens_seen": 0})
"""


def test_kill_9_during_a_checkpoint_leaves_the_previous_one_usable(tmp_path):
    folder = tmp_path / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(folder)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 60
        # wait for a second checkpoint to be in the middle of being written, then kill -9
        while not (list(folder.glob("step-*")) and list(folder.glob(".tmp-step-*"))):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    latest = latest_checkpoint(folder)
    torch.manual_seed(1)
    model = GPT(config_from_preset("tiny", 512))
    optimizer = make_optimizer(model, TrainConfig(), torch.device("cpu"))
    meta = load_training_state(latest, model, optimizer)
    assert meta["step"] >= 1 and optimizer.state  # AdamW moments restored
    torch.manual_seed(0)  # the weights the script saved: seed 0, one step
    saved = GPT(config_from_preset("tiny", 512))
    step = make_optimizer(saved, TrainConfig(), torch.device("cpu"))
    saved(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))[1].backward()
    step.step()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values()))
    assert all(p.name.startswith(("step-", ".tmp-step-")) for p in folder.iterdir())


def test_gradient_accumulation_gives_the_update_of_one_big_batch(artifact):
    (x, y), = _global_batches(artifact, steps=1)
    params = []
    for split in (1, 2, 4):  # 8 sequences as 1, 2 or 4 micro-batches
        torch.manual_seed(0)
        model = GPT(config_from_preset("tiny", 512, block_size=32))
        optimizer = torch.optim.SGD(model.parameters())
        rows = 8 // split
        micro = [(x[i:i + rows], y[i:i + rows]) for i in range(0, 8, rows)]
        loss, _ = train_step(model, optimizer, micro, lr=0.5, grad_clip=0, device=torch.device("cpu"))
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert (params[0] - params[1]).abs().max() < 1e-6 and (params[0] - params[2]).abs().max() < 1e-6


# ------------------------------------------------------------------------------------------ DDP

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_batches(artifact: Path, steps: int = 2):
    files, _, _, eot = open_token_artifact(artifact)
    stream = TokenStream(files, 32, 8, eot, seed=11)
    return [next(stream) for _ in range(steps)]


def _ddp_worker(rank: int, port: int, artifact: str, out: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = GPT(config_from_preset("tiny", 512, block_size=32))
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(model.parameters())  # update = -lr x gradient: any scaling error shows
        for x, y in _global_batches(Path(artifact)):
            mine = slice(4 * rank, 4 * rank + 4)  # this rank's half of the global batch, in 2 micro-batches
            micro = [(x[mine][:2], y[mine][:2]), (x[mine][2:], y[mine][2:])]
            train_step(ddp, optimizer, micro, lr=0.5, grad_clip=0.5, device=torch.device("cpu"), ddp=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/step-rank{rank}.safetensors")
        # the whole loop under DDP (AdamW): data striped by rank, a checkpoint with both ranks' loader states;
        # a made-up peak of 1 TFLOP/s so that MFU is computed on the CPU
        os.environ["SCRATCHLM_PEAK_FLOPS"] = "1e12"
        train(small(max_steps=2, eval_every=0), artifact, f"{out}/run", progress=False)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/run-rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_two_rank_ddp_gives_the_same_update_as_one_process(artifact, tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(_free_port(), str(artifact), str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", 512, block_size=32))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters())
    norms = []
    for x, y in _global_batches(artifact):  # one process, the same 8 sequences in 2 micro-batches of 4
        _, norm = train_step(model, optimizer, [(x[:4], y[:4]), (x[4:], y[4:])], lr=0.5, grad_clip=0.5,
                             device=torch.device("cpu"))
        norms.append(float(norm))
    assert min(norms) > 0.5  # clipping was active, so the global norm had to be the same too
    ranks = [load_file(tmp_path / f"step-rank{r}.safetensors") for r in range(2)]
    for name, value in model.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name])
        assert (ranks[0][name] - value).abs().max() < 1e-6, name
    moved = max((model.state_dict()[k] - initial[k]).abs().max() for k in initial)
    assert moved > 1e-3
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert [s["rank"] for s in meta["loader"]] == [0, 1] and meta["loader"][0]["world_size"] == 2
    assert meta["step"] == 2 and meta["tokens_seen"] == 2 * 512
    run = [load_file(tmp_path / f"run-rank{r}.safetensors") for r in range(2)]
    assert all(torch.equal(run[0][k], run[1][k]) for k in run[0])  # DDP kept the ranks in step
    # speed per rank: tokens/s of both ranks over 2; MFU = one rank's FLOP/s over one device's peak
    flops_per_token = model.flops_per_token(32)
    for r in read_metrics(tmp_path / "run"):
        assert r["tokens_per_s_per_rank"] == pytest.approx(r["tokens_per_s"] / 2)
        assert r["flops_per_s"] == pytest.approx(flops_per_token * r["tokens_per_s_per_rank"])
        assert r["mfu"] == pytest.approx(r["flops_per_s"] / 1e12)


# --------------------------------------------------------------------------------- the stage

def test_pretrain_stage_is_cached_and_resume_is_keyed_by_checkpoint_content(artifact, tmp_path, monkeypatch):
    import shutil

    import pipeline.stages.pretrain as pretrain
    from pipeline.runner import plan, run_stage
    from pipeline.stages import get_stage
    from storage.store import ArtifactStore

    stage = get_stage("pretrain")
    store = ArtifactStore(tmp_path / "store")
    config = small(max_steps=8, stop_at=6, eval_every=3)
    first = run_stage(stage, [artifact], config, store)
    assert not first.cached
    stats = first.manifest["stats"]
    names = {o["file"] for o in first.manifest["side_outputs"]}
    assert {"model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl", "loss.png"} <= names
    assert any(n.startswith("events.out.tfevents.") for n in names)
    assert stats["tokens"] == 6 * 512 and stats["train"]["steps"] == 6
    entropy = stats["train"]["unigram_entropy_nats"]
    assert 3.0 < entropy < math.log(512)  # real text: well below uniform
    assert stats["train"]["val_loss"] < math.log(512) and any("unigram entropy" in s for s in stats["summary_lines"])

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr("model.train.train", no_training)
    again = run_stage(stage, [artifact], config, store)
    assert again.cached and again.path == first.path and again.manifest == first.manifest
    # device and checkpoint frequency do not name the output; the learning rate does
    assert plan(stage, [artifact], dataclasses.replace(config, device="auto", checkpoint_every=3))[2] == first.key
    assert plan(stage, [artifact], dataclasses.replace(config, lr=1e-3))[2] != first.key
    # --resume: the checkpoint's content is in the key, not its path
    copy = tmp_path / "copy"
    shutil.copytree(first.path, copy)
    resumed = dataclasses.replace(config, stop_at=0, resume=str(first.path))
    key = plan(stage, [artifact], resumed)[2]
    assert plan(stage, [artifact], dataclasses.replace(resumed, resume=str(copy)))[2] == key
    assert key != plan(stage, [artifact], dataclasses.replace(config, stop_at=0))[2]
    monkeypatch.undo()
    result = run_stage(stage, [artifact], resumed, store)
    assert result.key == key
    assert [r["step"] for r in read_metrics(result.path)] == list(range(1, 9))


BARE_BOX = """
import runpy, sys
BLOCKED = ("pipeline", "flows", "storage", "prefect", "tqdm", "matplotlib", "tensorboard", "xxhash", "typer",
           "fastwarc", "resiliparse", "datasketch", "fasttext", "transformers")
for name in BLOCKED:
    sys.modules[name] = None  # `import name` now fails as if it were not installed
sys.argv = ["python -m model.train"] + sys.argv[1:]
runpy.run_module("model.train", run_name="__main__", alter_sys=True)
"""


def test_the_command_runs_with_only_torch_numpy_pyarrow_safetensors_tokenizers(artifact, tmp_path):
    out = tmp_path / "bare"
    args = ["--data", str(artifact), "--out", str(out), "--preset", "tiny", "--seq-len", "32", "--batch-tokens", "256",
            "--max-steps", "3", "--eval-every", "0", "--device", "cpu", "--cpu-threads", "1"]
    done = subprocess.run([sys.executable, "-c", BARE_BOX, *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(out)
    assert "loss" in done.stderr and "val loss" in done.stderr
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]
    assert (out / "model.safetensors").is_file() and not (out / "loss.png").exists()  # no matplotlib there


def test_a_users_mistake_is_one_line_and_exit_2(artifact, tmp_path, capsys):
    from model.train import main

    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: no part-*.parquet token files\n"
    assert main(["--data", str(artifact), "--out", str(tmp_path / "out"), "--seq-len", "30", "--batch-tokens", "100"]) == 2
    assert capsys.readouterr().err == "error: --batch-tokens 100 is not a multiple of seq_len 30 × 1 rank(s)\n"
    assert main(["--data", str(artifact), "--out", str(tmp_path / "out"), "--resume", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: no checkpoint here")


def test_a_diverging_run_stops_with_one_line_and_keeps_its_checkpoint(artifact, tmp_path):
    from model.train import TrainError

    with pytest.raises(TrainError, match="not been finite for 3 logged steps"):
        train(small(lr=1e6, warmup_steps=0, grad_clip=0, max_steps=40, checkpoint_every=2, eval_every=0),
              artifact, tmp_path, progress=False)
    rows = read_metrics(tmp_path)
    assert not math.isfinite(rows[-1]["loss"]) and "not finite" in rows[-1]["warning"]
    assert latest_checkpoint(tmp_path / "checkpoints").name.startswith("step-")


# ------------------------------------------------------------------- logging, resume rules, GPU path

def test_logging_every_n_steps_averages_the_steps_between(full_run, artifact, tmp_path):
    """--log-every 4 (a GPU's way: one host sync per 4 steps): the same training, a record every
    4th step holding the mean loss of those 4 steps."""
    _, _, every = full_run
    rows = read_metrics(tmp_path) if train(small(log_every=5), artifact, tmp_path, progress=False) else []
    assert [r["step"] for r in rows] == [5, 10, 12, 15, 20, 24]  # eval steps (12, 24) log too
    losses = {r["step"]: r["loss"] for r in every}
    previous = 0
    for r in rows:
        want = sum(losses[s] for s in range(previous + 1, r["step"] + 1)) / (r["step"] - previous)
        assert r["loss"] == pytest.approx(want, rel=1e-5) and r.get("steps_averaged", 1) == r["step"] - previous
        previous = r["step"]
    assert rows[-1]["val_loss"] == every[-1]["val_loss"]  # the same run, logged less often


def test_resume_refuses_another_schedule_unless_asked(full_run, artifact, tmp_path):
    from model.train import TrainError, main

    first = tmp_path / "first"
    train(small(stop_at=6), artifact, first, progress=False)
    with pytest.raises(TrainError, match=r"--max-steps 30 differs from the checkpoint's 24; use --stop-at"):
        train(small(max_steps=30, resume=str(first)), artifact, tmp_path / "a", progress=False)
    with pytest.raises(TrainError, match=r"--lr 0.001 differs .* 0.003.*--batch-tokens 1024 differs .* 512"):
        train(small(lr=1e-3, batch_tokens=1024, resume=str(first)), artifact, tmp_path / "b", progress=False)
    with pytest.raises(TrainError, match=r"--seed 1 differs .* \(the data order cannot change on resume\)"):
        train(small(seed=1, resume=str(first), resume_new_schedule=True), artifact, tmp_path / "c", progress=False)
    # the CLI: one line, exit 2
    assert main(["--data", str(artifact), "--out", str(tmp_path / "d"), "--preset", "tiny", "--seq-len", "32",
                 "--batch-tokens", "512", "--micro-batch", "8", "--max-steps", "30", "--warmup-steps", "4",
                 "--lr", "0.003", "--eval-every", "12", "--eval-batches", "4", "--device", "cpu",
                 "--resume", str(first), "--no-progress"]) == 2
    # asked for: the new schedule applies from the checkpoint on
    summary = train(small(max_steps=30, weight_decay=0.0, resume=str(first), resume_new_schedule=True), artifact,
                    tmp_path / "e", progress=False)
    rows = read_metrics(tmp_path / "e")
    assert summary["resumed_from"] == 6 and rows[-1]["step"] == 30
    assert rows[6]["lr"] == pytest.approx(lr_at(7, small(max_steps=30)))


@pytest.mark.timeout(900)  # inductor compiles C++ kernels with g++: a minute or two alone, more on a shared machine
def test_compiled_bf16_training_on_the_cpu_stays_close_to_float32(artifact, tmp_path):
    """The GPU recipe (torch.compile + bf16 autocast) on torch's CPU inductor: finite losses, each
    within a few hundredths of a nat of the eager float32 run on the same batches."""
    steps = dict(max_steps=6, eval_every=0)
    eager = train(small(**steps), artifact, tmp_path / "fp32", progress=False)
    compiled = train(small(**steps, compile="on", precision="bf16"), artifact, tmp_path / "bf16", progress=False)
    a, b = read_metrics(tmp_path / "fp32"), read_metrics(tmp_path / "bf16")
    assert all(math.isfinite(r["loss"]) for r in b) and len(b) == 6
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b)) < 0.05
    assert b[-1]["loss"] < b[0]["loss"] - 0.3  # and it learns
    assert eager["val_loss"] == pytest.approx(compiled["val_loss"], abs=0.05)


def test_a_small_batch_on_a_gpu_is_warned_about():
    from model.train import GPU_MIN_BATCH_TOKENS, batch_size_warning

    assert "far below what a GPU wants" in batch_size_warning(small(batch_tokens=2048), "cuda")
    assert batch_size_warning(small(batch_tokens=GPU_MIN_BATCH_TOKENS), "cuda") is None
    assert batch_size_warning(small(batch_tokens=2048), "cpu") is None


def test_the_prefetcher_hands_out_the_streams_batches_and_states_in_order(artifact):
    from model.train import BatchPrefetcher

    files, _, _, eot = open_token_artifact(artifact)
    plain = TokenStream(files, 32, 4, eot, seed=3, shuffle_tokens=4096)
    prefetcher = BatchPrefetcher(TokenStream(files, 32, 4, eot, seed=3, shuffle_tokens=4096), accum=3, pin=False)
    try:
        for _ in range(40):
            batches, state = prefetcher.next()
            want = [next(plain) for _ in range(3)]
            assert all(torch.equal(x, wx) and torch.equal(y, wy) for (x, y), (wx, wy) in zip(batches, want))
            assert state == plain.state_dict()
    finally:
        prefetcher.close()
    assert not prefetcher.thread.is_alive()


HELLASWAG_ITEMS = 12


def test_a_benchmark_scored_during_training_lands_in_metrics_tensorboard_and_the_key(artifact, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pipeline.runner import plan
    from pipeline.stages import get_stage
    from token_corpus import austen_documents

    docs = [t for _, t in austen_documents() if len(t) > 200][:HELLASWAG_ITEMS + 3]
    bench = tmp_path / "austen_hellaswag.jsonl"
    bench.write_text("".join(json.dumps({"ctx": d[:120], "endings": [d[120:200]] + [o[120:200] for o in docs[i + 1:i + 4]],
                                         "label": 0}) + "\n" for i, d in enumerate(docs[:HELLASWAG_ITEMS])))
    out = tmp_path / "run"
    summary = train(small(max_steps=8, eval_every=0, eval_benchmark=str(bench), eval_benchmark_every=4), artifact,
                    out, progress=False)
    rows = read_metrics(out)
    scored = [r for r in rows if "eval" in r]
    assert [r["step"] for r in scored] == [4, 8]
    name = "austen_hellaswag"
    for r in scored:
        assert r["eval"][f"{name}/items"] == HELLASWAG_ITEMS and 0 <= r["eval"][f"{name}/acc"] <= 1
    assert summary["eval"] == scored[-1]["eval"]
    acc = EventAccumulator(str(next(out.glob("events.out.tfevents.*"))))
    acc.Reload()
    assert [e.step for e in acc.Scalars(f"eval/{name}/acc")] == [4, 8]
    # the file's content names the pretrain artifact, not its path
    stage = get_stage("pretrain")
    config = small(eval_benchmark=str(bench), eval_benchmark_every=4)
    key = plan(stage, [artifact], config)[2]
    copy = tmp_path / "elsewhere.jsonl"
    copy.write_bytes(bench.read_bytes())
    assert plan(stage, [artifact], dataclasses.replace(config, eval_benchmark=str(copy)))[2] == key
    copy.write_text(bench.read_text().replace('"label": 0', '"label": 1', 1))
    assert plan(stage, [artifact], dataclasses.replace(config, eval_benchmark=str(copy)))[2] != key
    from model.train import TrainError

    with pytest.raises(TrainError, match="--eval-benchmark .*empty file"):
        (tmp_path / "empty.jsonl").write_text("")
        train(small(eval_benchmark=str(tmp_path / "empty.jsonl")), artifact, tmp_path / "x", progress=False)
