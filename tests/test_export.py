"""Export to Hugging Face: transformers loads the folder with no custom code and computes our logits."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import one_torch_thread, pattern_text, tiny_gpt, train_tokenizer, write_checkpoint  # noqa: E402,F401

from model.export import ExportError, export_hf  # noqa: E402
from model.generate import generate_tokens  # noqa: E402

REPO = Path(__file__).resolve().parent.parent



@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("export") / "tokenizer.json", pattern_text(200))


def randomised(model):
    """Weights away from their initial values (norm gains too), so every tensor's mapping matters."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


@pytest.mark.parametrize("shape", [dict(n_kv_head=2, tie_embeddings=False), dict(n_kv_head=4, tie_embeddings=True)],
                         ids=["gqa-untied", "mha-tied"])
def test_transformers_loads_the_export_and_agrees(tokenizer_path, tmp_path, shape):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    ours_tok = Tokenizer.from_file(str(tokenizer_path))
    model = randomised(tiny_gpt(ours_tok.get_vocab_size(), **shape))
    folder = export_hf(model, tokenizer_path, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    text = "the dog barks loudly. the sky is blue<|endoftext|>the cat"
    ids = ours_tok.encode(text).ids
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits
        ours, _ = model(torch.tensor([ids]))
    assert (theirs - ours).abs().max().item() <= 1e-4
    # the tokenizer: same ids (special tokens included, no BOS added), same text back, the right specials
    hf_tok = AutoTokenizer.from_pretrained(folder)
    for sample in (text, "héllo wörld — 日本語", "  two  spaces\n\nnew line"):
        assert hf_tok(sample)["input_ids"] == ours_tok.encode(sample).ids
        assert hf_tok.decode(ours_tok.encode(sample).ids) == sample
    eot = ours_tok.token_to_id("<|endoftext|>")
    assert hf_tok.eos_token_id == eot and hf_tok.bos_token_id == eot
    assert hf_tok.pad_token_id == ours_tok.token_to_id("<|pad|>")
    # a turn of the chat template ends at <|assistant_end|>: generation stops there and at <|endoftext|>
    assert GenerationConfig.from_pretrained(folder).eos_token_id == [ours_tok.token_to_id("<|assistant_end|>"), eot]
    # greedy decoding in transformers continues the same way as ours
    prompt = ours_tok.encode("the dog").ids
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=eot)
    assert out[0, len(prompt):].tolist() == list(generate_tokens(model, prompt, 10, temperature=0))


def test_options_llama_cannot_express_are_refused(tokenizer_path, tmp_path):
    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab_size()
    with pytest.raises(ExportError, match="qk_norm"):
        export_hf(tiny_gpt(vocab, qk_norm=True), tokenizer_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    export_hf(tiny_gpt(vocab), tokenizer_path, tmp_path / "done")
    with pytest.raises(ExportError, match="already exists"):
        export_hf(tiny_gpt(vocab), tokenizer_path, tmp_path / "done")


def test_export_command(tokenizer_path, tmp_path):
    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab_size()
    good = write_checkpoint(tmp_path / "good", tiny_gpt(vocab), tokenizer_path)
    qk = write_checkpoint(tmp_path / "qk", tiny_gpt(vocab, qk_norm=True), tokenizer_path)
    cli = [sys.executable, "-m", "flows.cli", "export", "--format", "hf"]
    done = subprocess.run(cli + [str(good), "--output", str(tmp_path / "hf")], capture_output=True, text=True,
                          cwd=REPO, timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_key_value_heads"] == 2 and config["vocab_size"] == vocab
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
        "tokenizer.json", "tokenizer_config.json"]
    refused = subprocess.run(cli + [str(qk), "--output", str(tmp_path / "qk-hf")], capture_output=True, text=True,
                             cwd=REPO, timeout=240)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "error: qk_norm=True (RMSNorm on queries and keys) has no Llama equivalent; "
        "this model cannot be exported to the Hugging Face Llama format"]
    assert not (tmp_path / "qk-hf").exists()


def test_replace_folder_swaps_whole_or_leaves_the_old_folder(tmp_path):
    from model.checkpoint import replace_folder

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with replace_folder(out) as tmp:
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder left
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with replace_folder(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
