"""The model runner: turns a scheduler output into one forward pass and the logits to sample from."""

from __future__ import annotations

import torch

from chatforge.model import GPT
from inference_svc.paged_attention import KVCache, build_metadata, make_backend
from inference_svc.scheduler import SchedulerOutput


class ModelRunner:
    def __init__(self, model: GPT, cache: KVCache, *, attention: str = "auto"):
        self.model = model
        self.cache = cache
        self.device = next(model.parameters()).device
        self.backend = make_backend(cache, attention, self.device)

    @torch.inference_mode()
    def execute(self, output: SchedulerOutput) -> tuple[list[str], torch.Tensor]:
        """Compute every scheduled chunk in one flattened forward; returns the ids of the requests
        that sample this step and their last-position logits (rows, vocab)."""
        # Decodes first, longest block table first: adjacent decodes of similar length share one
        # gather and one attention call per layer (see paged_attention.build_metadata).
        chunks = sorted(output.chunks, key=lambda c: (len(c.token_ids) != 1, -len(c.block_ids)))
        ids = [t for c in chunks for t in c.token_ids]
        meta = build_metadata(
            [(c.start_pos, c.block_ids) for c in chunks],
            [len(c.token_ids) for c in chunks],
            self.cache.block_size,
            self.device,
        )
        rows, sampling_ids, row = [], [], 0
        for c in chunks:
            row += len(c.token_ids)
            if c.sample:
                rows.append(row - 1)
                sampling_ids.append(c.request_id)
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        # Only the sampling rows need the head (GPT.forward's `logits_rows`); a step of decodes
        # only samples every row and passes none.
        selected = torch.tensor(rows, dtype=torch.long, device=self.device) if len(rows) != len(ids) else None
        logits = self.model(
            idx,
            positions=meta.positions.view(1, -1),
            attention=self.backend.bind(meta),
            logits_rows=selected,
        )
        return sampling_ids, logits[0]
