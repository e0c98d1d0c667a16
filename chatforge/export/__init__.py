"""Taking a chatforge model elsewhere: `chatforge export hf` / `chatforge import hf` (`hf.py`).

Torch-free at import time; `configuration_chatforge.py` and `modeling_chatforge.py` are not imported
by chatforge at all: they are copied into each export for `transformers` to load.
"""
