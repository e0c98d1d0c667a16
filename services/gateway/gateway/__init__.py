"""The FastAPI gateway: OpenAI-compatible chat API, jobs API, models, auth and rate limits."""
