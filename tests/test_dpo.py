"""DPO: the loss is the paper's formula, the answer log-probs are transformers' Llama's, the reference
log-probs are computed once (one model in memory) and stored, training moves the held-out reward
accuracy and margin up, the artifact loads as a checkpoint, and bad data files are one line, exit 2."""
import json
import math
import random
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import SOUNDS, one_torch_thread, pattern_text, tiny_gpt, train_tokenizer, write_checkpoint  # noqa: E402,F401

from model.dpo import dpo_loss, encode_pairs, pair_logps, read_preferences  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("dpo") / "tokenizer.json", pattern_text(200))


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    """A preference the model can learn and that holds on held-out pairs: answers ending "quietly."
    over the same answer ending "loudly." (which the tokenizer's training text makes the likelier
    one before DPO). A few records in chat-message form."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        animal = rng.choice(list(SOUNDS))
        prompt = f"what does the {animal} {i} do?"
        chosen, rejected = f"the {animal} {SOUNDS[animal]} quietly.", f"the {animal} {SOUNDS[animal]} loudly."
        if i % 10 == 0:
            rows.append({"prompt": [{"role": "user", "content": prompt}],
                         "chosen": [{"role": "assistant", "content": chosen}], "rejected": rejected})
        else:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer_path):
    root = tmp_path_factory.mktemp("dpo-stage")
    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab_size()
    return {"root": root, "checkpoint": write_checkpoint(root / "base", tiny_gpt(vocab), tokenizer_path),
            "data": write_jsonl(root / "prefs.jsonl", preference_rows(60))}


def test_the_loss_is_the_papers_formula():
    """−log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]), by hand in floats."""
    gen = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(16, generator=gen, dtype=torch.float64) * 20 - 40 for _ in range(4))
    for beta in (0.1, 0.5):
        losses, chosen_r, rejected_r = dpo_loss(pc, pr, rc, rr, beta)
        for i in range(16):
            z = beta * ((pc[i].item() - rc[i].item()) - (pr[i].item() - rr[i].item()))
            assert losses[i].item() == pytest.approx(math.log1p(math.exp(-z)) if z > -30 else -z, rel=1e-9)
            assert chosen_r[i].item() == pytest.approx(beta * (pc[i].item() - rc[i].item()), rel=1e-12)
    # equal policy and reference: every pair at ln 2, no reward either way
    losses, chosen_r, _ = dpo_loss(pc, pr, pc, pr, 0.1)
    assert torch.allclose(losses, torch.full_like(losses, math.log(2))) and not chosen_r.any()


def test_answer_logps_are_transformers_llamas(tokenizer_path, tmp_path):
    """Σ log p over the answer tokens (its <|assistant_end|> included), in a right-padded batch, equals
    the same sum from LlamaForCausalLM's logits of each sequence alone."""
    from transformers import AutoModelForCausalLM

    from model.export import export_hf

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    model = tiny_gpt(tokenizer.get_vocab_size(), seed=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    records = read_preferences(write_jsonl(tmp_path / "p.jsonl", preference_rows(4)))
    pairs, too_long = encode_pairs(tokenizer, records, 64)
    assert too_long == 0 and len(pairs) == 4
    end = tokenizer.token_to_id("<|assistant_end|>")
    assert all(p.chosen[-1] == end and p.chosen[:p.chosen_start] == p.rejected[:p.rejected_start] for p in pairs)
    with torch.no_grad():
        chosen, rejected = pair_logps(model, pairs, tokenizer.token_to_id("<|pad|>"))
    hf = AutoModelForCausalLM.from_pretrained(export_hf(model, tokenizer_path, tmp_path / "hf"), dtype=torch.float32)
    for i, pair in enumerate(pairs):
        for ids, start, ours in ((pair.chosen, pair.chosen_start, chosen[i]), (pair.rejected, pair.rejected_start, rejected[i])):
            with torch.no_grad():
                logps = torch.log_softmax(hf(torch.tensor([ids])).logits[0, :-1].float(), -1)
            theirs = sum(logps[t - 1, ids[t]].item() for t in range(start, len(ids)))
            assert ours.item() == pytest.approx(theirs, abs=1e-4)


def test_reference_computed_once_one_model_and_the_preference_learned(setup, monkeypatch, tmp_path):
    import model.dpo
    import model.gpt
    from model.checkpoint import load_model
    from pipeline.runner import RunOptions, run_stage
    from pipeline.stages.dpo import STAGE, DPOConfig
    from storage.store import ArtifactStore

    calls = {"reference": 0, "models": 0}
    original_reference, original_init = model.dpo.reference_logps, model.gpt.GPT.__init__

    def counting_reference(*args, **kwargs):
        calls["reference"] += 1
        return original_reference(*args, **kwargs)

    def counting_init(self, *args, **kwargs):
        calls["models"] += 1
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(model.dpo, "reference_logps", counting_reference)
    monkeypatch.setattr(model.gpt.GPT, "__init__", counting_init)
    config = DPOConfig(data=[str(setup["data"])], lr=2e-3, epochs=3, batch_size=8, val_fraction=0.2, cpu_threads=1)
    store = ArtifactStore(tmp_path / "store")
    result = run_stage(STAGE, [setup["checkpoint"]], config, store, RunOptions(progress=False))
    steps = json.loads((result.path / "dpo.json").read_text())["train"]["steps"]
    assert steps >= 15 and calls == {"reference": 1, "models": 1}  # 3 epochs, one reference pass, one model
    monkeypatch.undo()

    report = json.loads((result.path / "dpo.json").read_text())
    before, after = report["before"], report["after"]
    assert before["reward_accuracy"] == 0 and before["reward_margin"] == 0 and before["loss"] == pytest.approx(math.log(2))
    assert after["pairs"] == report["val_pairs"] >= 5
    assert after["reward_accuracy"] >= 0.9 and after["reward_margin"] > 0 and after["loss"] < math.log(2)
    # relative to the reference, not absolute: "quietly." (more tokens) may stay the less likely answer
    assert before["logp_accuracy"] == 0
    assert after["chosen_logp"] - after["rejected_logp"] > before["chosen_logp"] - before["rejected_logp"]
    # the stored reference is the input model's log-probs, pair by pair
    stored = pq.read_table(result.path / "reference_logps.parquet").to_pylist()
    assert len(stored) == report["train_pairs"] + report["val_pairs"]
    base, tokenizer_path, _ = load_model(setup["checkpoint"])
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    by_where = {where: (p, c, r) for where, p, c, r in read_preferences(setup["data"])}
    pairs, _ = encode_pairs(tokenizer, [(row["pair"], *by_where[row["pair"]]) for row in stored[:6]], 64)
    with torch.no_grad():
        chosen, rejected = pair_logps(base, pairs, tokenizer.token_to_id("<|pad|>"))
    for row, c, r in zip(stored, chosen.tolist(), rejected.tolist()):
        assert row["chosen_logp"] == pytest.approx(c, abs=1e-4) and row["rejected_logp"] == pytest.approx(r, abs=1e-4)
    # the artifact is a checkpoint that loads like a pretrain artifact; the rerun comes from the store
    tuned, _, meta = load_model(result.path)
    assert meta["dpo"]["beta"] == 0.1 and tuned.config == base.config
    assert run_stage(STAGE, [setup["checkpoint"]], config, store, RunOptions(progress=False)).cached


def test_lora_dpo_writes_a_peft_adapter_and_merged_weights(setup, tmp_path):
    from model.checkpoint import load_model
    from pipeline.runner import RunOptions, run_stage
    from pipeline.stages.dpo import STAGE, DPOConfig
    from storage.store import ArtifactStore

    config = DPOConfig(data=[str(setup["data"])], lora_rank=4, max_steps=6, cpu_threads=1)
    result = run_stage(STAGE, [setup["checkpoint"]], config, ArtifactStore(tmp_path / "store"), RunOptions(progress=False))
    adapter = json.loads((result.path / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["task_type"] == "CAUSAL_LM" and adapter["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    report = json.loads((result.path / "dpo.json").read_text())
    assert report["lr"] == 5e-5 and report["lora"]["trainable_params"] == report["lora"]["lora_params"]
    tuned, _, _ = load_model(result.path)  # merged: a plain GPT state_dict
    base, _, _ = load_model(setup["checkpoint"])
    moved = [n for n, p in tuned.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert moved and all(n.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "o_proj") for n in moved)
    # `export --format peft`: the adapter on the exported base model computes the merged model's logits
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from flows.cli import app

    out = CliRunner().invoke(app, ["export", "--format", "peft", str(result.path), "-o", str(tmp_path / "peft")])
    assert out.exit_code == 0, out.stderr
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "peft" / "base",
                                                                             dtype=torch.float32), tmp_path / "peft")
    ids = torch.randint(0, tuned.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (adapted.eval()(ids).logits - tuned(ids)[0]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("content, says", [
    (['{"prompt": "a", "chosen": "b"}'], "bad.jsonl:1: no 'rejected'"),
    (['{"prompt": "a", "chosen": "b", "rejected": "c"}', '{oops'], "bad.jsonl:2: not a JSON object"),
    (['{"prompt": "a", "chosen": "same", "rejected": "same"}'], "are the same answer"),
    (['{"prompt": "a", "chosen": [{"role": "user", "content": "x"}], "rejected": "c"}'], "assistant messages only"),
    ([], "no records"),
])
def test_a_bad_data_file_is_one_line_exit_2(setup, tmp_path, content, says):
    from flows.cli import app

    bad = write_jsonl(tmp_path / "bad.jsonl", content)
    out = CliRunner().invoke(app, ["stage", "dpo", "--input", str(setup["checkpoint"]), "--data", str(bad),
                                   "--store", str(tmp_path / "s")])
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.exit_code == 2 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "bad.jsonl" in errors[0] and says in errors[0], errors[0]
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").rglob("manifest.json"))
