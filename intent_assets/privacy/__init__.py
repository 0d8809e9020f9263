"""The privacy area (no Dagster import): PII redaction, the auditor's per-record log, an independent leak scan and
the memorization probe of the fine-tuned model."""
