"""The one chat template: training ids = transformers' apply_chat_template over the exported
template; the loss mask covers exactly the assistant's tokens and its end-of-turn marker; the three
data shapes are read, anything else is one line naming the file and line."""
import json
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import one_torch_thread, pattern_text, tiny_gpt, train_tokenizer  # noqa: E402,F401

from model.chat import (ASSISTANT_END, ASSISTANT_START, CHAT_TEMPLATE, ChatDataError, read_chat_examples,  # noqa: E402
                        render_chat, render_text)

CONVERSATIONS = [
    [{"role": "user", "content": "what does the dog do?"}, {"role": "assistant", "content": "the dog barks loudly."}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "héllo wörld — 日本語?"},
     {"role": "assistant", "content": "  two  spaces\n\nand a new line "}, {"role": "user", "content": "and then"},
     {"role": "assistant", "content": "the cat meows."}],
    [{"role": "user", "content": "empty answer next"}, {"role": "assistant", "content": ""},
     {"role": "user", "content": [{"type": "text", "text": "content as "}, {"type": "text", "text": "parts"}]}],
]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("chat") / "tokenizer.json", pattern_text(200))


@pytest.fixture(scope="module")
def exported(tokenizer_path, tmp_path_factory):
    """An HF export (model/export.py) whose tokenizer carries the chat template, loaded by transformers."""
    from transformers import AutoTokenizer

    from model.export import export_hf

    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab_size()
    folder = export_hf(tiny_gpt(vocab), tokenizer_path, tmp_path_factory.mktemp("hf") / "model")
    return folder, AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("n", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_exported_template_gives_the_training_ids(exported, tokenizer_path, n, generation_prompt):
    folder, hf_tokenizer = exported
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    messages = CONVERSATIONS[n]
    ids, _ = render_chat(tokenizer, messages, add_generation_prompt=generation_prompt)
    theirs = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True,
                                              return_dict=True)["input_ids"]
    assert theirs == ids
    assert hf_tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False) == \
        render_text(messages, generation_prompt)
    # the template is written once, in both places transformers looks
    assert (folder / "chat_template.jinja").read_text() == CHAT_TEMPLATE
    assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE


def test_the_mask_covers_exactly_the_assistant_tokens_and_the_end_marker(tokenizer_path):
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    start, end = tokenizer.token_to_id(ASSISTANT_START), tokenizer.token_to_id(ASSISTANT_END)
    messages = CONVERSATIONS[1]
    ids, mask = render_chat(tokenizer, messages)
    assert len(ids) == len(mask)
    expected = []
    for m in messages:
        if m["role"] == "assistant":
            expected += tokenizer.encode(m["content"], add_special_tokens=False).ids + [end]
    assert [i for i, keep in zip(ids, mask) if keep] == expected
    # and by position: inside each assistant turn (after its start marker, up to and including its end
    # marker) everything is trained; everywhere else nothing is
    inside, want = False, []
    for token in ids:
        want.append(inside)
        if token == start:
            inside = True
            want[-1] = False
        elif token == end:
            inside = False
    assert mask == want and mask[-1] is True and ids[-1] == end
    # the generation prompt adds an untrained <|assistant_start|>
    ids_gen, mask_gen = render_chat(tokenizer, messages[:3], add_generation_prompt=True)
    assert ids_gen[-1] == start and mask_gen[-1] is False


def test_the_three_data_shapes(tmp_path):
    records = [
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Translate.", "input": "chat", "output": "cat"},
        {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!"}]},
        {"prompt": "2+2=", "completion": "4"},
        {"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]},
    ]
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    expected = [
        [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
        [{"role": "user", "content": "Translate.\n\nchat"}, {"role": "assistant", "content": "cat"}],
        records[2]["messages"],
        [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}],
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
    ]
    assert read_chat_examples(tmp_path / "mixed.jsonl") == expected
    (tmp_path / "array.json").write_text(json.dumps(records, indent=2))
    assert read_chat_examples(tmp_path / "array.json") == expected
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": 2, "data": records}))
    assert read_chat_examples(tmp_path / "wrapped.json") == expected
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in records))  # `datasets` writes these
    assert read_chat_examples(tmp_path / "lines.json") == expected


BAD = [
    ('{"text": "a pretraining document"}', "not instruction data"),
    ('{"instruction": "Q"}', "needs a string 'output'"),
    ('{"prompt": "Q"}', "needs both 'prompt' and 'completion'"),
    ('{"messages": [{"role": "user", "content": "Q"}]}', "ends with a user message"),
    ('{"messages": [{"role": "assistant", "content": "A"}]}', "must start with a user message"),
    ('{"messages": [{"role": "user", "content": "Q"}, {"role": "bot", "content": "A"}]}', "role 'bot'"),
    ('{"messages": [{"role": "user", "content": "Q"}, {"role": "user", "content": "Q"}, '
     '{"role": "assistant", "content": "A"}]}', "two user messages in a row"),
    ('{"prompt": "Q", "completion": "A<|assistant_end|>more"}', "special token <|assistant_end|>"),
    ('{"instruction": "Q", "output": "A"', "not a JSON object"),
    ('["not", "an", "object"]', "expected an object"),
]


@pytest.mark.parametrize("line, says", BAD, ids=[b[1] for b in BAD])
def test_a_bad_record_is_one_line_naming_file_and_line(tmp_path, line, says):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "fine", "completion": "ok"}\n\n' + line + "\n")
    with pytest.raises(ChatDataError) as caught:
        read_chat_examples(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ") and says in message and "\n" not in message


def test_unreadable_files(tmp_path):
    for name, content, says in [("empty.jsonl", "", "no records"), ("bin.jsonl", b"\xff\xfe\x00", "not UTF-8"),
                                ("obj.json", json.dumps({"a": 1}), "exactly one array")]:
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ChatDataError, match=says):
            read_chat_examples(path)
    with pytest.raises(ChatDataError, match="no such file"):
        read_chat_examples(tmp_path / "missing.jsonl")
