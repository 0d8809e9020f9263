"""The continuous-learning area (no Dagster import): agents' corrections, the model registry with its promotion gate,
and DPO from corrections."""
