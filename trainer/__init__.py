"""The training stages (tokenizer, base, mid, sft, rl, eval), their data, optimizers and the Ray Train driver."""
