"""The GPU scripts must work the first time a GPU is at hand: run here on the CPU (--smoke) the way
the device runner runs them, from the repository root with no PYTHONPATH and $OUT set."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_script(script: str, out: Path, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OUT": str(out), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, f"benchmarks/{script}", "--smoke", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / script.replace(".py", ".json")).read_text())


def test_gpu_pretrain_smoke_writes_its_json_under_out(tmp_path):
    result = run_script("gpu_pretrain.py", tmp_path)
    assert [r["model"] for r in result["results"]] == ["ours", "llama"]  # transformers' Llama beside ours
    for r in result["results"]:
        assert math.isfinite(r["first_loss"]) and math.isfinite(r["last_loss"]) and r["tokens_per_s"] > 0
    assert result["command"].startswith("python benchmarks/gpu_pretrain.py")


def test_gpu_train_check_smoke_writes_its_json_under_out(tmp_path):
    result = run_script("gpu_train_check.py", tmp_path)
    assert result["loss_last"] < result["loss_first"]
    assert result["resume_bit_identical"]  # on a CPU the resumed run repeats the uninterrupted one exactly
    assert result["tokens_per_s_per_rank_median"] == result["tokens_per_s_median"]  # one rank
