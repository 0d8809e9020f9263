"""The data area (no Dagster import): loading and validating chat logs, days, splits, the taxonomy, the shipped
sample (and its builder), redaction-and-dedup of the corpus, synthetic augments and multi-intent blends."""
