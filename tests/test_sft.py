"""Instruction tuning: the stage trains on assistant tokens only, its artifact loads like a pretrain
artifact and answers, stopping by itself; the loss equals transformers' Llama loss with the same
ignored labels; LoRA keeps an adapter that reproduces the merged model; bad data is one line, exit 2."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from chat_fixtures import ANSWER, QUESTION, base_checkpoint, fine_tuned, write_instructions  # noqa: E402
from eval_fixtures import SOUNDS, one_torch_thread  # noqa: E402,F401

from model.chat import render_chat  # noqa: E402
from model.checkpoint import load_model  # noqa: E402
from model.sft import Example, assistant_loss, micro_batches, summed_loss  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return fine_tuned(tmp_path_factory.mktemp("sft-full"))


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    return fine_tuned(tmp_path_factory.mktemp("sft-lora"), lora_rank=4, lr=1e-2)


def test_fine_tuned_model_answers_and_stops(full):
    from model.generate import chat_reply

    folder, base, _ = full
    model, tokenizer_path, meta = load_model(folder)  # loads like a pretrain artifact
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 61)) and [r["step"] for r in rows if "val_loss" in r] == [20, 40, 60]
    summary = meta["sft"]["summary"]
    assert summary["val_loss"] < 0.5 * summary["val_loss_before"]  # held-out questions, answered
    assert (folder / "loss.png").is_file() and meta["data"] == json.loads((base / "config.json").read_text())["data"]
    for animal in ("dog", "cat"):
        reply = chat_reply(model, tokenizer, [{"role": "user", "content": QUESTION.format(animal=animal)}],
                           max_new_tokens=40, temperature=0)
        assert reply.finish_reason == "stop" and reply.tokens < 40
        assert reply.text == ANSWER.format(animal=animal, sound=SOUNDS[animal])


def test_targets_are_the_mask_and_padding_changes_nothing(full):
    folder, _, _ = full
    model, tokenizer_path, _ = load_model(folder)
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    examples = [Example(*render_chat(tokenizer, [{"role": "user", "content": q}, {"role": "assistant", "content": a}]))
                for q, a in [("what does the dog do?", "the dog barks loudly."), ("hi", "the sky is blue and the grass is green.")]]
    (x, y), = list(micro_batches(examples, 10_000, pad_id=0))
    for example, row in zip(sorted(examples, key=lambda e: -len(e.ids)), y):
        targets = [t for t in row.tolist() if t != -100]
        assert targets == [i for i, keep in zip(example.ids[1:], example.mask[1:]) if keep]
    # one example alone, and padded in a batch beside a longer one: the same summed loss
    alone = [summed_loss(model, *next(micro_batches([e], 10_000, 0)))[0].item() for e in examples]
    together, n = summed_loss(model, x, y)
    assert together.item() == pytest.approx(sum(alone), rel=1e-5)
    assert n == sum(e.trained for e in examples)


def test_loss_equals_transformers_llama_with_ignored_labels(full, tmp_path):
    """The reference: transformers' LlamaForCausalLM on the exported model, labels = the ids with -100
    outside the assistant's tokens (what TRL builds), shifted inside transformers."""
    from transformers import AutoModelForCausalLM

    from model.export import export_hf

    folder, _, _ = full
    model, tokenizer_path, _ = load_model(folder)
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    ids, mask = render_chat(tokenizer, [{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": "what does the fish do?"},
                                        {"role": "assistant", "content": "the fish swims loudly."}])
    ours = assistant_loss(model, [Example(ids, mask)], pad_id=0, device="cpu", max_tokens=10_000)
    hf = AutoModelForCausalLM.from_pretrained(export_hf(model, tokenizer_path, tmp_path / "hf"), dtype=torch.float32)
    labels = torch.tensor([[i if keep else -100 for i, keep in zip(ids, mask)]])
    with torch.no_grad():
        theirs = hf(torch.tensor([ids]), labels=labels).loss.item()
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_lora_trains_few_parameters_and_its_adapter_reproduces_the_merged_model(lora):
    from model.lora import load_peft_adapter

    folder, base, _ = lora
    meta = json.loads((folder / "config.json").read_text())
    stats = meta["sft"]["summary"]["lora"]
    assert stats["trainable_params"] == meta["sft"]["summary"]["memory"]["trainable_params"]
    assert stats["trainable_fraction"] < 0.05
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 4
    merged, _, _ = load_model(folder)
    adapted, _, _ = load_model(base)
    load_peft_adapter(adapted, folder)
    ids = torch.tensor([list(range(5, 40))])
    with torch.no_grad():
        assert (merged(ids)[0] - adapted(ids)[0]).abs().max().item() < 1e-5
        assert (merged(ids)[0] - load_model(base)[0](ids)[0]).abs().max().item() > 1e-3  # it did train


def test_the_stage_caches_and_keys_on_the_data(tmp_path):
    from pipeline.runner import RunOptions, run_stage
    from pipeline.stages import get_stage
    from model.sft_config import SFTConfig
    from storage.store import ArtifactStore

    base, _ = base_checkpoint(tmp_path / "m", steps=5)
    data = write_instructions(tmp_path / "a.jsonl", repeat=1)
    store, options = ArtifactStore(tmp_path / "store"), RunOptions(progress=False)
    config = SFTConfig(data=[str(data)], max_steps=2, batch_tokens=128)
    first = run_stage(get_stage("sft"), [base], config, store, options)
    assert not first.cached and (first.path / "model.safetensors").is_file()
    assert first.manifest["stats"]["sft"]["steps"] == 2
    copy = tmp_path / "b.jsonl"
    copy.write_bytes(data.read_bytes())
    again = run_stage(get_stage("sft"), [base], SFTConfig(data=[str(copy)], max_steps=2, batch_tokens=128), store, options)
    assert again.cached and again.path == first.path  # the data's content names the output, not its path
    load_model(first.path)


def _cli(*args, input=None):
    """The command line in this process (typer's CliRunner): exit code, stdout, stderr."""
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], input=input)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize("content, says", [
    ('{"instruction": "Q", "output": "A"}\n{"text": "a web page"}\n', ":2: not instruction data"),
    ('{"messages": [{"role": "user", "content": "Q"}]}\n', ":1: the conversation ends with a user message"),
    ('{"prompt": "Q", "completion": "A"}\n{oops\n', ":2: not a JSON object"),
])
def test_bad_data_is_one_line_and_exit_2(tmp_path, content, says):
    base, _ = base_checkpoint(tmp_path / "m", steps=1)
    (tmp_path / "bad.jsonl").write_text(content)
    done = _cli("stage", "sft", "--input", base, "--data", tmp_path / "bad.jsonl", "--store", tmp_path / "s")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(tmp_path / "bad.jsonl") + says in errors[0], done.stderr
    assert not list((tmp_path / "s").rglob("manifest.json"))


def test_chat_command(full):
    folder, base, _ = full
    done = _cli("chat", folder, QUESTION.format(animal="horse"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "text": ANSWER.format(animal="horse", sound=SOUNDS["horse"]), "finish_reason": "stop",
        "tokens": json.loads(done.stdout.strip().splitlines()[-1])["tokens"]}
    # a conversation on stdin: one answer per line, the history kept
    talk = _cli("chat", folder, input="what does the cat do?\nwhat does the bird do?\n")
    assert talk.returncode == 0, talk.stderr
    answers = talk.stdout.splitlines()  # (trained on single turns only, the second answer may name another animal)
    assert len(answers) == 2 and answers[0] == ANSWER.format(animal="cat", sound="meows")
    assert answers[1].startswith("the ") and answers[1].endswith(" loudly.")
    untuned = _cli("chat", base, "hi", "--max-new-tokens", "5", "--json")  # a base model: it says so, and runs
    assert untuned.returncode == 0 and "not instruction-tuned" in untuned.stderr
    assert json.loads(untuned.stdout.strip().splitlines()[-1])["tokens"] <= 5


def test_align_flow_runs_sft_and_caches(tmp_path, prefect_server):
    """scratchlm-align: sft as a cached task (a second run comes back with the same artifact), dpo
    skipped without preference data; deployed as scratchlm-align/model-to-chat."""
    from flows.align_flow import align_pipeline
    from flows.deployments import deployments
    from model.sft_config import SFTConfig

    base, _ = base_checkpoint(tmp_path / "m", steps=5)
    data = write_instructions(tmp_path / "a.jsonl", repeat=1)
    config = SFTConfig(data=[str(data)], max_steps=2, batch_tokens=128)
    first = align_pipeline(model=[str(base)], store=str(tmp_path / "store"), sft=config)
    again = align_pipeline(model=[str(base)], store=str(tmp_path / "store"), sft=config)
    assert set(first) == {"sft"} and again == first
    assert (Path(first["sft"]) / "manifest.json").is_file()
    assert "scratchlm-align/model-to-chat" in {f"{d.flow_name}/{d.name}" for d in deployments(only=("align",))}


def test_chat_form_multiple_choice(tmp_path):
    """Chat-form scoring (model/chat_eval.py) = the letter with the highest logit right after the
    assistant marker, computed one item at a time; a model tuned on the format beats chance."""
    import random

    from model.benchmarks import ChoiceItem
    from model.chat_eval import chat_question, letter_ids, score_chat_choices
    from model.sft import fine_tune
    from model.sft_config import SFTConfig

    rng = random.Random(0)
    animals = ["dog", "cat", "horse", "mouse"]

    def item(animal):  # choices in a fixed order: the model has to learn the format and which letter goes with which animal
        choices = [f"it {SOUNDS[a]}" for a in animals]
        return ChoiceItem(QUESTION.format(animal=animal), choices, animals.index(animal))

    train = [item(rng.choice(animals)) for _ in range(160)]
    with open(tmp_path / "mc.jsonl", "w") as f:
        for it in train:
            f.write(json.dumps({"prompt": chat_question(it), "completion": "ABCD"[it.label]}) + "\n")
    base, _ = base_checkpoint(tmp_path / "m", block_size=128)
    fine_tune(SFTConfig(max_steps=150, batch_tokens=1024, lr=3e-3, val_fraction=0), base, [tmp_path / "mc.jsonl"],
              tmp_path / "sft", progress=False)
    model, tokenizer_path, _ = load_model(tmp_path / "sft")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    test = [item(a) for a in animals for _ in range(3)]
    scored = score_chat_choices(model, tokenizer, test, batch_size=7)
    letters = letter_ids(tokenizer, 4)
    one_by_one = []
    for it in test:
        ids, _ = render_chat(tokenizer, [{"role": "user", "content": chat_question(it)}], add_generation_prompt=True)
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0][0, -1]
        one_by_one.append(int(torch.argmax(logits[letters])))
    assert scored["predictions"] == one_by_one
    assert scored["chance"] == 0.25 and scored["acc"] > 0.5, scored["acc"]
    # the evaluate stage scores the same in chat form beside the base-model form (auto: an sft artifact)
    from pipeline.runner import RunOptions, run_stage
    from pipeline.stages import get_stage
    from pipeline.stages.evaluate import EvaluateConfig
    from storage.store import ArtifactStore

    bench = tmp_path / "animals-mc.jsonl"
    bench.write_text("".join(json.dumps({"ctx": it.context, "endings": it.choices, "label": it.label}) + "\n" for it in test))
    result = run_stage(get_stage("evaluate"), [tmp_path / "sft"], EvaluateConfig(benchmark=[str(bench)], prompt=[],
                       continuation_task=0), ArtifactStore(tmp_path / "store"), RunOptions(progress=False))
    report = json.loads((result.path / "eval.json").read_text())
    assert report["benchmarks"][0]["chat_form"]["acc"] == scored["acc"]
    assert "acc_norm" in report["benchmarks"][0]  # the base-model form beside it


def test_export_peft_loads_in_peft_with_the_merged_logits(lora, tmp_path):
    """`export --format peft`: the adapter beside the HF export of its base; transformers + peft load
    them and compute the sft artifact's (merged) logits."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder, _, _ = lora
    done = _cli("export", folder, "--format", "peft", "--output", tmp_path / "peft")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "peft"
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str((out / "base").resolve())
    hf = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out / "base", dtype=torch.float32), out).eval()
    merged, _, _ = load_model(folder)
    ids = torch.tensor([list(range(5, 40))])
    with torch.no_grad():
        assert (hf(ids).logits - merged(ids)[0]).abs().max().item() <= 1e-4
    refused = _cli("export", full_folder := folder.parent.parent / "nope", "--format", "peft", "--output", tmp_path / "x")
    assert refused.returncode == 2 and str(full_folder) in refused.stderr
