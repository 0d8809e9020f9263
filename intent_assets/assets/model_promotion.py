"""``model_promotion``: the champion/challenger gate over ``eval_report``, recorded in the model registry; and the
rollback job that restores an earlier champion."""

import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from intent_assets.assets.common import MODEL_OWNERS, PII_REDACTED
from intent_assets.assets.eval_report import ZERO_SHOT, registry_for
from intent_assets.deploy import k8s_config
from intent_assets.loop.registry import GateDecision, best_baseline, promotion_gate
from intent_assets.quality import CLASSICAL_BASELINES, MULTI_LABEL_BASELINES
from intent_assets.resources import ArtifactStore, RetrainPolicy

LINEAGE_ASSETS = ["agent_corrections", "instruction_dataset", "lora_adapter", "awq_model", "eval_report"]


def _scores(metrics: dict, n: int) -> dict:
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "micro_f1": metrics["micro_f1"],
            "test_examples": n, "per_intent_f1": {k: round(v["f1"], 4) for k, v in metrics["per_intent"].items()}}


def _label_sets(report: dict) -> dict | None:
    """Exact-set accuracies of the report's multi-intent table (None when the test split is single-intent)."""
    multi = (report.get("multi_intent") or {}).get("systems")
    if not multi or report["fine_tuned"] not in multi:
        return None
    champion = (report.get("champion") or {}).get("system")
    return {"challenger": multi[report["fine_tuned"]]["exact_set_accuracy"],
            "baselines": {n: multi[n]["exact_set_accuracy"] for n in MULTI_LABEL_BASELINES if n in multi},
            "champion": multi[champion]["exact_set_accuracy"] if champion in multi else None}


def _lineage(context: dg.AssetExecutionContext) -> dict:
    """Data versions of the upstream assets this challenger was built from (as the instance recorded them)."""
    out = {"run_id": context.run_id}
    for name in LINEAGE_ASSETS:
        event = context.instance.get_latest_materialization_event(dg.AssetKey(name))
        if event is not None and event.asset_materialization is not None:
            mat = event.asset_materialization
            entry = {"run_id": event.run_id, "data_version": mat.tags.get("dagster/data_version") if mat.tags else None}
            if "corrections_version" in mat.metadata:
                entry["corrections_version"] = mat.metadata["corrections_version"].value
            out[name] = entry
    return out


@dg.asset(
    group_name="model",
    op_tags=k8s_config.DATA_STEP,
    owners=MODEL_OWNERS,
    kinds={"json"},
    tags=PII_REDACTED,
    check_specs=[dg.AssetCheckSpec("challenger_promoted", asset="model_promotion",
                                   description="The new model passed the gate (WARN when the champion stays).")],
)
def model_promotion(
    context: dg.AssetExecutionContext,
    artifacts: ArtifactStore,
    retrain_policy: RetrainPolicy,
    eval_report: dict,
    awq_model: dict,
):
    """Registers the new 4-bit model as ``challenger`` and promotes it to ``champion`` only if, on the frozen test
    split of this very run, it beats the champion by the policy's margin, beats the zero-shot base model, scores at
    least the best classical baseline of the same report (TF-IDF + SVM, MiniLM + LR; ``require_beating_baselines``
    and ``baseline_margin`` relax that), and no intent's F1 drops by more than the policy allows. When the test split
    has multi-intent messages, its exact-set accuracy must also reach the best multi-label baseline's (same
    relaxation) and not fall below the champion's. Otherwise the
    champion stays. Every decision, with its reasons,
    scores and the lineage to the data versions, is kept in the registry (``artifacts/registry/registry.json``).
    Roll back with ``rollback_job``.
    """
    report = json.loads((Path(eval_report["report_dir"]) / "report.json").read_text(encoding="utf-8"))
    systems, metric = report["systems"], retrain_policy.promotion_metric
    challenger = systems[report["fine_tuned"]]["metrics"]
    zero_shot = systems.get(ZERO_SHOT, {}).get("metrics")
    baselines = {name: systems[name]["metrics"] for name in CLASSICAL_BASELINES if name in systems}
    best = best_baseline(baselines, metric)
    registry = registry_for(artifacts)
    champion = registry.alias("champion")
    label_sets = _label_sets(report)
    scores = {**_scores(challenger, report["n"]), **({"exact_set_accuracy": label_sets["challenger"]} if label_sets else {})}
    entry = registry.register(awq_model["model_dir"], awq_model["run_key"], scores, _lineage(context))

    if champion is not None and champion["version"] == entry["version"]:
        decision = GateDecision(True, [f"v{entry['version']} is already the champion (same training run)"], {})
    elif champion is not None and not report.get("champion"):
        decision = GateDecision(False, [f"champion v{champion['version']} was not evaluated on this run's test split"], {})
    else:
        champion_metrics = systems[report["champion"]["system"]]["metrics"] if report.get("champion") else None
        decision = promotion_gate(challenger, champion_metrics, zero_shot, margin=retrain_policy.promotion_margin,
                                  max_intent_f1_drop=retrain_policy.max_intent_f1_drop, metric=metric,
                                  baselines=baselines, require_beating_baselines=retrain_policy.require_beating_baselines,
                                  baseline_margin=retrain_policy.baseline_margin, label_sets=label_sets)
    event = registry.decide(entry["version"], decision)
    artifacts.publish(registry.root)
    after = registry.alias("champion")
    for reason in decision.reasons:
        context.log.info(f"gate: {reason}")
    context.log.info(f"v{entry['version']} {event['event']}; champion is now "
                     + (f"v{after['version']}" if after else "none"))
    history = registry.load()["history"][-10:]
    yield dg.Output(
        {"version": entry["version"], "promoted": decision.promote, "champion_version": after["version"] if after else None,
         "champion_model_dir": after["model_dir"] if after else None},
        metadata={
            "decision": event["event"],
            "challenger_version": entry["version"],
            "champion_version": after["version"] if after else 0,
            f"challenger_{metric}": round(challenger[metric], 4),
            "best_baseline": best[0] if best else "none in the report",
            f"best_baseline_{metric}": round(best[1], 4) if best else dg.MetadataValue.null(),
            "baseline_check": "required" if retrain_policy.require_beating_baselines else "relaxed",
            "gate": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
            "history": dg.MetadataValue.table(
                records=[dg.TableRecord({"at": h["at"], "event": h["event"], "version": int(h["version"]),
                                         "champion_after": int(h["champion_after"] or 0)}) for h in history],
                schema=dg.TableSchema(columns=[dg.TableColumn("at", "string"), dg.TableColumn("event", "string"),
                                               dg.TableColumn("version", "int"), dg.TableColumn("champion_after", "int")]),
            ),
            "registry": dg.MetadataValue.path(str(registry.file)),
        },
    )
    yield dg.AssetCheckResult(check_name="challenger_promoted", passed=decision.promote,
                              severity=dg.AssetCheckSeverity.WARN, metadata={"reasons": "; ".join(decision.reasons)})


class RollbackConfig(dg.Config):
    version: int = Field(ge=1, description="Registry version to make the champion again.")
    reason: str = Field(default="", description="Why (kept in the registry's history).")


@dg.op(tags=k8s_config.DATA_STEP)
def rollback_champion(context: dg.OpExecutionContext, config: RollbackConfig, artifacts: ArtifactStore) -> dict:
    """Make an earlier registry version the champion again."""
    registry = registry_for(artifacts)
    target = registry.version(config.version)
    artifacts.fetch(target["model_dir"], missing_ok=True)
    if not Path(target["model_dir"]).is_dir():
        raise dg.Failure(f"cannot roll back to v{config.version}: its model directory {target['model_dir']} is gone")
    entry = registry.rollback(config.version, config.reason)
    artifacts.publish(registry.root)
    context.log.info(f"champion v{entry['champion_before']} -> v{entry['champion_after']}")
    return entry


@dg.job(description="Restore an earlier model version as the champion (config: version, reason).")
def rollback_job():
    rollback_champion()
