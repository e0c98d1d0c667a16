"""Evaluation: bits-per-byte, CORE (base models), chat evals and ChatCORE (chat models), the eval stage."""
