"""The model area (no Dagster import): the embedded base model, instruction records and prompts, LoRA training and
its checkpoints, AWQ quantization, constrained-decoding classification, the classical baselines, metrics and
out-of-scope routing."""
