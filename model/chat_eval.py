"""Multiple choice in chat form, for instruction-tuned models (as nanochat's chat evaluation does).

The base-model form (model/evaluate.py) scores each choice as a continuation of the context. A chat
model is asked instead: the question and its lettered choices are the user's turn, and the answer
is the letter the model puts first after <|assistant_start|>, read from the logits of the letters
alone (the model is not free to say anything else, so a model that learned the format but not the
answer scores chance, and one that has not learned the format is not penalised for wording).

    user:       <context>\n\nA. <choice 0>\nB. <choice 1>\n...\n\nAnswer with the letter.
    assistant:  B

Scored with model/evaluate.loglikelihoods (one request per letter, same context): the argmax of the
letters' log-probabilities is the argmax of their logits."""
from __future__ import annotations

import string
from typing import Sequence

import numpy as np

from model.benchmarks import ChoiceItem
from model.chat import render_chat
from model.evaluate import loglikelihoods, mean_stderr

INSTRUCTION = "Answer with the letter."
LETTERS = string.ascii_uppercase


def chat_question(item: ChoiceItem) -> str:
    if len(item.choices) > len(LETTERS):
        raise ValueError(f"{len(item.choices)} choices: more than there are letters")
    lines = [f"{LETTERS[i]}. {choice.strip()}" for i, choice in enumerate(item.choices)]
    return f"{item.context.strip()}\n\n" + "\n".join(lines) + f"\n\n{INSTRUCTION}"


def letter_ids(tokenizer, n: int) -> list[int]:
    """The token each letter starts with (one token each in any byte-level BPE worth the name)."""
    ids = [tokenizer.encode(LETTERS[i], add_special_tokens=False).ids[0] for i in range(n)]
    if len(set(ids)) != n:
        raise ValueError("the tokenizer gives two letters the same first token")
    return ids


def score_chat_choices(model, tokenizer, items: Sequence[ChoiceItem], batch_size: int = 32) -> dict:
    """acc (with its standard error) and chance of the chat form over `items`; per-item predictions."""
    requests, shapes = [], []
    for item in items:
        prompt, _ = render_chat(tokenizer, [{"role": "user", "content": chat_question(item)}], add_generation_prompt=True)
        letters = letter_ids(tokenizer, len(item.choices))
        requests += [(prompt, [letter]) for letter in letters]
        shapes.append(len(letters))
    scores = loglikelihoods(model, requests, batch_size, pad_id=0)
    correct, predictions, at = [], [], 0
    for item, n in zip(items, shapes):
        pred = int(np.argmax([s for s, _ in scores[at:at + n]]))
        at += n
        predictions.append(pred)
        correct.append(float(pred == item.label))
    return {"items": len(items), "acc": float(np.mean(correct)) if correct else float("nan"),
            "acc_stderr": mean_stderr(correct), "chance": float(np.mean([1 / len(i.choices) for i in items])),
            "predictions": predictions, "form": f"chat: user turn = context + lettered choices + {INSTRUCTION!r}; "
                                                "the letter's logit after <|assistant_start|>"}
