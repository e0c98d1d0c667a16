"""chatforge: train your own small ChatGPT from scratch and serve it.

Importing this package must stay cheap and torch-free: the gateway, tokenizer and
sandbox images carry no PyTorch. Only `chatforge.model` (and what builds on it) imports torch.
"""

__version__ = "0.1.0"
