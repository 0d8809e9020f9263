"""The deployment area (no Dagster import): per-step Kubernetes settings and model directories as verified S3
prefixes."""
