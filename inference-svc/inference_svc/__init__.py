"""The inference engine (paged KV cache, continuous batching, sampling, tool loop) and its Ray Serve app."""
