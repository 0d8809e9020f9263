"""Asset checks an analyst sees next to the assets: data quality (schema, quarantine share, synthetic share cap;
the PII re-scan lives with ``redacted_corpus``) and model quality (the fine-tuned model against the baselines).
The rules are in ``intent_assets.quality``; metadata holds counts, shares, labels and scores only."""

import dagster as dg
import pandas as pd

from intent_assets import quality
from intent_assets.assets.common import DAILY
from intent_assets.assets.eval_report import FINE_TUNED
from intent_assets.assets.synthetic_augments import SyntheticAugmentsConfig
from intent_assets.data.chat_logs import CHAT_LOG_SCHEMA
from intent_assets.deploy import k8s_config

WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR


@dg.asset_check(asset="raw_chat_logs", description="Every stored row matches the chat-log schema (pandera: columns, "
                "types, speakers, non-empty text, unique conversation turns).", op_tags=k8s_config.PII_DATA_STEP,
                partitions_def=DAILY)
def raw_chat_logs_schema(raw_chat_logs: pd.DataFrame) -> dg.AssetCheckResult:
    violations = quality.schema_violations(raw_chat_logs, CHAT_LOG_SCHEMA)
    return dg.AssetCheckResult(
        passed=not violations,
        severity=ERROR,
        metadata={
            "rows": len(raw_chat_logs),
            "columns": dg.MetadataValue.json(list(raw_chat_logs.columns)),
            "violations": dg.MetadataValue.json(violations),
        },
    )


@dg.asset_check(
    asset="quarantined_records",
    additional_ins={"raw_chat_logs": dg.AssetIn()},
    op_tags=k8s_config.PII_DATA_STEP,  # reads the raw (PII) bucket
    partitions_def=DAILY,
    description=f"At most {quality.MAX_QUARANTINE_SHARE:.0%} of the input records are quarantined (more means the "
    "source or its format changed).",
)
def quarantine_share_within_limit(quarantined_records: pd.DataFrame, raw_chat_logs: pd.DataFrame) -> dg.AssetCheckResult:
    passed, details = quality.quarantine_share(len(raw_chat_logs), len(quarantined_records))
    reasons = quarantined_records["reason"].value_counts().head(10).to_dict() if len(quarantined_records) else {}
    return dg.AssetCheckResult(passed=passed, severity=WARN,
                               metadata={**details, "top_reasons": dg.MetadataValue.json(reasons)})


def _synthetic_max_share(instance: dg.DagsterInstance) -> tuple[float, str]:
    """The ``max_share`` that the latest ``synthetic_augments`` materialization planned with (its metadata)."""
    event = instance.get_latest_materialization_event(dg.AssetKey("synthetic_augments"))
    entry = event.asset_materialization.metadata.get("max_share") if event and event.asset_materialization else None
    if entry is not None:
        return float(entry.value), "synthetic_augments metadata"
    return SyntheticAugmentsConfig().max_share, "synthetic_augments config default"


@dg.asset_check(asset="instruction_dataset", description="No intent's synthetic training rows exceed max_share of its "
                "real training rows (the cap synthetic_augments was configured with).")
def synthetic_share_within_cap(context: dg.AssetCheckExecutionContext, instruction_dataset: pd.DataFrame) -> dg.AssetCheckResult:
    max_share, source = _synthetic_max_share(context.instance)
    passed, details = quality.synthetic_share_by_intent(instruction_dataset, max_share)
    over = details.pop("intents_over_cap")
    return dg.AssetCheckResult(passed=passed, severity=ERROR,
                               metadata={**details, "max_share_from": source, "intents_over_cap": dg.MetadataValue.json(over)})


def _versus(eval_report: dict, baselines: tuple[str, ...], metrics: tuple[str, ...] = ("macro_f1",)) -> dg.AssetCheckResult:
    # the model as served (report["fine_tuned"]); reports written before both precisions were scored: the 4-bit row
    candidate = eval_report.get("fine_tuned", FINE_TUNED)
    results = {metric: quality.compare_systems(eval_report["summary"], candidate, baselines, metric) for metric in metrics}
    metadata: dict = {}
    for metric, (_, details) in results.items():
        baseline_scores = details.pop("baselines", {})
        prefix = "" if len(metrics) == 1 else f"{metric}_"
        metadata.update({f"{prefix}{k}" if k != "candidate" else k: v for k, v in details.items()})
        metadata[f"{prefix}baseline_scores"] = dg.MetadataValue.json(baseline_scores)
    return dg.AssetCheckResult(passed=all(passed for passed, _ in results.values()), severity=WARN, metadata=metadata)


@dg.asset_check(asset="eval_report", description="The fine-tuned model's macro-F1, as served, is at least the base model's "
                "zero-shot macro-F1 (fine-tuning helped).")
def fine_tuned_beats_zero_shot(eval_report: dict) -> dg.AssetCheckResult:
    return _versus(eval_report, (quality.ZERO_SHOT,))


@dg.asset_check(asset="eval_report", description="The fine-tuned model, as served, scores at least the best classical "
                "baseline of the same report (TF-IDF + SVM, MiniLM + LR) in accuracy and in macro-F1. A model that answers "
                "lists: at least the best one-vs-rest baseline in exact-set accuracy over every test message (the "
                "single-label comparison, on the single-intent messages only, stays in the metadata).")
def fine_tuned_beats_classical_baselines(eval_report: dict) -> dg.AssetCheckResult:
    result = _versus(eval_report, quality.CLASSICAL_BASELINES, ("accuracy", "macro_f1"))
    if not eval_report.get("multi_intent"):
        return result
    # a list model: its label sets against the one-vs-rest baselines on every test message decide
    candidate = eval_report.get("fine_tuned", FINE_TUNED)
    passed, details = quality.compare_systems(eval_report["multi_intent"], candidate, quality.MULTI_LABEL_BASELINES,
                                              "exact_set_accuracy")
    details.pop("baselines", None)
    metadata = {**{f"single_intent_{k}": v for k, v in result.metadata.items()}, "single_intent_passed": result.passed,
                **{f"label_sets_{k}": v for k, v in details.items() if k != "candidate"}}
    return dg.AssetCheckResult(passed=passed, severity=WARN, metadata=metadata)


DATA_QUALITY_CHECKS = [raw_chat_logs_schema, quarantine_share_within_limit, synthetic_share_within_cap]
MODEL_QUALITY_CHECKS = [fine_tuned_beats_zero_shot, fine_tuned_beats_classical_baselines]
