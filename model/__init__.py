"""PyTorch only (no Prefect): the GPT, its training, data loading, evaluation, generation and
export. Filled by the tokenizer and pretraining issues; the data pipeline does not import it."""
