"""``eval_report``: the fine-tuned 4-bit model against baselines on the frozen test split."""

import json
from pathlib import Path
from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from intent_assets import k8s_config
from intent_assets.assets.common import MODEL_OWNERS, PII_REDACTED, image
from intent_assets.baselines import minilm_baseline, tfidf_baseline, time_predictions
from intent_assets.classifier import ConstrainedClassifier
from intent_assets.instructions import dataset_system_prompt, system_prompt
from intent_assets.metrics import classification_report, confusion_plot, render_markdown
from intent_assets.oos import apply_threshold, calibrate_threshold, oos_label, oos_report
from intent_assets.registry import ModelRegistry
from intent_assets.resources import ArtifactStore, InferenceEngine
from intent_assets.serving import in_process_model_dir, is_quantized_dir, read_serving_info
from intent_assets.taxonomy import Taxonomy

FINE_TUNED = "fine-tuned 4-bit (AWQ)"
FINE_TUNED_16BIT = "fine-tuned 16-bit (merged)"
ZERO_SHOT = "base model zero-shot"


def served_system(engine_kind: str) -> str:
    """The row of the report that is the model as served, which the checks and the promotion gate judge.

    The in-process engine (``transformers``) dequantizes an AWQ model to 16-bit at load time: on a CPU the 4-bit
    weights buy no speed there and cost accuracy (BENCHMARKS.md), so it serves the merged 16-bit weights of the
    same fine-tuned model. vLLM (``openai``) runs the int4 kernels: it serves the 4-bit model.
    """
    return FINE_TUNED if engine_kind == "openai" else FINE_TUNED_16BIT


def registry_for(artifacts: ArtifactStore) -> ModelRegistry:
    """The model registry kept with the artifacts (prod: fetched from S3 first)."""
    root = artifacts.path("registry")
    artifacts.fetch(root, missing_ok=True)
    return ModelRegistry(root)


class EvalReportConfig(dg.Config):
    max_test_examples: Optional[int] = Field(default=None, ge=1, description="Evaluate on a seeded subset of the test split (None: all of it).")
    latency_requests: int = Field(default=32, ge=1, description="Requests timed one at a time for p50/p95 latency.")
    include_minilm: bool = Field(default=True, description="Also run the MiniLM-embeddings + logistic-regression baseline.")
    include_zero_shot: bool = Field(default=True, description="Also run the base model zero-shot with the same constrained decoding.")
    include_champion: bool = Field(default=True, description="Also run the registry's champion on the same split (the promotion gate compares against it).")
    include_unserved_precision: bool = Field(default=True, description="Also score the fine-tuned model in the precision the engine does not serve (the 4-bit AWQ model next to the served 16-bit one in-process, the 16-bit one next to vLLM's 4-bit): what 4 bits cost, on the same messages.")
    seed: int = Field(default=0, ge=0, description="Seed of the test subset.")
    max_validation_examples: int = Field(default=1000, ge=1, description="Validation examples (seeded subset) that calibrate the out-of-scope confidence threshold, when the taxonomy has an out-of-scope label.")


@dg.asset(
    group_name="model",
    op_tags=k8s_config.EVAL_REPORT,
    pool=k8s_config.GPU_POOL,
    owners=MODEL_OWNERS,
    kinds={"pytorch", "scikitlearn", "markdown"},
    tags={**PII_REDACTED, "compute": "gpu"},
)
def eval_report(
    context: dg.AssetExecutionContext,
    config: EvalReportConfig,
    artifacts: ArtifactStore,
    inference: InferenceEngine,
    instruction_dataset: pd.DataFrame,
    intent_taxonomy: dict,
    base_model: dict,
    awq_model: dict,
) -> dict:
    """Accuracy, macro/micro F1, per-intent precision/recall/F1, most confused pairs, out-of-taxonomy rate, and
    latency (p50/p95 per request) and throughput, on the frozen test split, side by side for: TF-IDF + linear
    SVM, MiniLM sentence embeddings + logistic regression, the base model zero-shot, and the fine-tuned model in
    both precisions: the one the engine serves (in-process: the merged 16-bit weights; vLLM: the 4-bit AWQ model),
    which the checks and the promotion gate judge, and the other one on the same messages (what 4 bits cost); the
    registry's champion in the served precision. Both language models answer through constrained decoding over the
    taxonomy, so they can only emit a valid label. Written as Markdown and JSON files too. Only labels and numbers appear: no message text.
    """
    taxonomy = Taxonomy.from_dict(intent_taxonomy)
    labels = taxonomy.names
    real = instruction_dataset[~instruction_dataset["synthetic"]]
    train, test = real[real["split"] == "train"], real[real["split"] == "test"]
    max_test = inference.cap("test_examples", config.max_test_examples)  # the environment may cap it
    latency_requests = inference.cap("latency_requests", config.latency_requests)
    if max_test and len(test) > max_test:
        test = test.sample(n=max_test, random_state=config.seed).sort_index()
    texts, gold = test["text"].tolist(), test["intent"].tolist()
    context.log.info(f"evaluating on {len(texts)} test examples, {len(labels)} intents")

    systems: dict[str, dict] = {}

    def record(name: str, predict, batch_size: int):
        predictions, latency = time_predictions(predict, texts, batch_size=batch_size, single_requests=min(latency_requests, len(texts)),
                                                  log=context.log.info, label=name)
        systems[name] = {"metrics": classification_report(gold, predictions, labels), "latency": latency, "predictions": predictions}
        m = systems[name]["metrics"]
        context.log.info(f"{name}: accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, p50 {latency['p50_ms']:.0f} ms")

    record("TF-IDF + linear SVM", tfidf_baseline(train["text"], train["intent"]).predict, 256)
    if config.include_minilm:
        record("MiniLM-L6 + logistic regression", minilm_baseline(train["text"], train["intent"]).predict, 64)

    prompt = dataset_system_prompt(instruction_dataset["messages"])  # exactly the prompt the model was trained on

    confidences: dict[str, float] = {}  # text -> the fine-tuned model's confidence (for the OOS threshold)

    def llm(classifier, keep_confidence: bool = False):
        def predict(batch):
            predictions = classifier.classify(batch, batch_size=inference.batch_size)
            if keep_confidence:
                confidences.update((t, p.confidence) for t, p in zip(batch, predictions))
            return [p.label for p in predictions]
        return predict

    artifacts.fetch(awq_model["model_dir"])  # prod: from S3, verified against its manifest
    served = served_system(inference.kind)
    if config.include_zero_shot:  # in-process whatever the engine: a server serves only the champion
        artifacts.fetch(base_model["path"])
        model, tokenizer = inference.load(base_model["path"])
        # a model that was not fine-tuned needs the intents listed, whatever prompt style the fine-tuned one uses
        record(ZERO_SHOT, llm(ConstrainedClassifier(model, tokenizer, labels, system_prompt(taxonomy))), inference.batch_size)
    merged_dir = awq_model.get("merged_dir")
    if merged_dir:
        artifacts.fetch(merged_dir, missing_ok=True)
    has_16bit = bool(merged_dir) and Path(merged_dir, "config.json").is_file()
    if served == FINE_TUNED_16BIT and not has_16bit:
        served = FINE_TUNED  # an older awq_model without its merged weights: the 4-bit model is all there is
    if served == FINE_TUNED:
        fine_tuned = inference.classifier(awq_model["model_dir"], labels, prompt, quantized=True)
    else:
        fine_tuned = inference.classifier(merged_dir, labels, prompt)
    record(served, llm(fine_tuned, keep_confidence=True), inference.batch_size)
    context.log.info(f"{served} ran on the {inference.kind} engine (the model as served)")
    if config.include_unserved_precision:  # in-process, like zero-shot: what the other precision scores
        if served == FINE_TUNED and has_16bit:
            model, tokenizer = inference.load(merged_dir)
            record(FINE_TUNED_16BIT, llm(ConstrainedClassifier(model, tokenizer, labels, prompt)), inference.batch_size)
        elif served == FINE_TUNED_16BIT:
            model, tokenizer = inference.load(awq_model["model_dir"], quantized=True)
            record(FINE_TUNED, llm(ConstrainedClassifier(model, tokenizer, labels, prompt)), inference.batch_size)
    champion = registry_for(artifacts).alias("champion") if config.include_champion else None
    champion_system = None
    if champion and champion["run_key"] != awq_model["run_key"]:  # in-process, like zero-shot
        artifacts.fetch(champion["model_dir"], missing_ok=True)
        if Path(champion["model_dir"]).is_dir():
            # in the precision the challenger is judged in: the champion's merged 16-bit weights where it has them
            champion_dir = Path(champion["model_dir"])
            if served == FINE_TUNED_16BIT:
                artifacts.fetch(champion_dir.parent / "merged", missing_ok=True)
                champion_dir = in_process_model_dir(champion_dir)
            quantized = is_quantized_dir(champion_dir)
            champion_system = f"champion v{champion['version']} ({'4-bit' if quantized else '16-bit'})"
            model, tokenizer = inference.load(str(champion_dir), quantized=quantized)
            # prompted as it was trained (its intent_assets.json): an older champion may use another prompt style
            info = read_serving_info(champion_dir)
            champion_prompt = info.system_prompt if info else prompt
            record(champion_system, llm(ConstrainedClassifier(model, tokenizer, labels, champion_prompt)), inference.batch_size)
        else:
            context.log.warning(f"champion v{champion['version']}: model directory {champion['model_dir']} is missing")
    oos = oos_label(labels)
    oos_summary = None
    if oos is not None:  # out-of-scope requests go to a human: in-scope accuracy and OOS recall, separately
        for name in list(systems):
            systems[name]["out_of_scope"] = oos_report(gold, systems[name]["predictions"], oos)
        val = real[real["split"] == "validation"]
        if len(val) > config.max_validation_examples:
            val = val.sample(n=config.max_validation_examples, random_state=config.seed).sort_index()
        if len(val) and (val["intent"] == oos).any():
            vp = fine_tuned.classify(val["text"].tolist(), batch_size=inference.batch_size)
            calib = calibrate_threshold(val["intent"].tolist(), [p.label for p in vp], [p.confidence for p in vp], oos)
            thresholded = apply_threshold(systems[served]["predictions"], [confidences[t] for t in texts], calib["threshold"], oos)
            name = f"{served} + confidence threshold {calib['threshold']:.3f}"
            systems[name] = {"metrics": classification_report(gold, thresholded, labels), "latency": systems[served]["latency"],
                             "out_of_scope": {**oos_report(gold, thresholded, oos), "threshold": calib["threshold"], "validation_examples": len(val)}}
        oos_summary = {name: {k: round(v, 4) for k, v in s["out_of_scope"].items()} for name, s in systems.items()}
    for s_ in systems.values():
        s_.pop("predictions", None)

    report = {"title": f"Intent routing on the test split ({taxonomy.name} v{taxonomy.version})", "systems": systems,
              "fine_tuned": served, "n": len(texts), "run_key": awq_model["run_key"], "inference_engine": inference.kind,
              "champion": {"system": champion_system, "version": champion["version"]} if champion_system else None}
    markdown = render_markdown(report)
    out = artifacts.path("eval_report", awq_model["run_key"])
    (out / "report.md").write_text(markdown, encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    main = systems[served]["metrics"]
    png = confusion_plot(main["confusion_matrix"], labels, title=f"{served}: confusion (row-normalized)")
    per_intent = dg.MetadataValue.table(
        records=[
            dg.TableRecord({"intent": k, "precision": round(v["precision"], 3), "recall": round(v["recall"], 3), "f1": round(v["f1"], 3), "support": v["support"]})
            # most-supported intents first, then by F1: what an analyst reads first is what matters most
            for k, v in sorted(main["per_intent"].items(), key=lambda kv: (-kv[1]["support"], -kv[1]["f1"], kv[0]))
        ],
        schema=dg.TableSchema(columns=[dg.TableColumn("intent", "string"), *[dg.TableColumn(c, "float") for c in ("precision", "recall", "f1")], dg.TableColumn("support", "int")]),
    )
    summary = {name: {k: round(s["metrics"][k], 4) for k in ("accuracy", "macro_f1", "micro_f1", "oot_rate")} for name, s in systems.items()}
    context.add_output_metadata(
        {
            "test_examples": len(texts),
            "accuracy": round(main["accuracy"], 4),
            "macro_f1": round(main["macro_f1"], 4),
            "micro_f1": round(main["micro_f1"], 4),
            "out_of_taxonomy_rate": main["oot_rate"],
            "served_system": served,
            "latency_p50_ms": round(systems[served]["latency"]["p50_ms"], 1),
            "latency_p95_ms": round(systems[served]["latency"]["p95_ms"], 1),
            "throughput_per_s": round(systems[served]["latency"]["throughput_per_s"], 2),
            "report": dg.MetadataValue.md(markdown),
            "confusion_matrix": image(png, out / "confusion.png", "confusion matrix"),
            "per_intent": per_intent,
            "systems": dg.MetadataValue.json(summary),
            "report_markdown": dg.MetadataValue.path(str(out / "report.md")),
            "report_json": dg.MetadataValue.path(str(out / "report.json")),
            "inference_engine": inference.kind,
            **({"out_of_scope": dg.MetadataValue.json(oos_summary)} if oos_summary else {}),
        }
    )
    artifacts.publish(out)
    return {"report_dir": str(out), "summary": summary, "run_key": awq_model["run_key"], "fine_tuned": served,
            **({"out_of_scope": oos_summary} if oos_summary else {})}
