"""Conversation tasks and mixtures for midtraining, SFT, RL and evaluation."""
