"""The serving area (no Dagster import): which model serves and how it loads (``champion``), and the vLLM
OpenAI-compatible server with its client (``vllm_server``)."""
