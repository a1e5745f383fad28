"""The tokenizer's special tokens, named once: the BPE trainer adds them, the loader, evaluation,
generation, the chat template and export look them up by these names.

Torch-free: importing it costs nothing, so pipeline/ can use it too."""

END_OF_TEXT = "<|endoftext|>"  # document separator; also what a chat conversation starts with
EOT_TOKEN = END_OF_TEXT        # the name the model code uses
PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
USER_START, USER_END = "<|user_start|>", "<|user_end|>"
ASSISTANT_START, ASSISTANT_END = "<|assistant_start|>", "<|assistant_end|>"
RESERVED_TOKEN = "<|reserved_0|>"

# The order is the ids' order: they take the last ids of the vocabulary.
SPECIAL_TOKENS = (END_OF_TEXT, PAD_TOKEN, BOS_TOKEN, USER_START, USER_END, ASSISTANT_START, ASSISTANT_END,
                  RESERVED_TOKEN)
