"""``eval_report``: the fine-tuned 4-bit model against baselines on the frozen test split."""

import json
from pathlib import Path
from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from intent_assets.assets.common import MODEL_OWNERS, PII_REDACTED, image
from intent_assets.data.multi_intent import is_blend, list_decoding, multilabel_scores
from intent_assets.data.taxonomy import Taxonomy, single_intent
from intent_assets.deploy import k8s_config
from intent_assets.loop.registry import ModelRegistry
from intent_assets.model.baselines import minilm_baseline, multilabel_baseline, tfidf_baseline, time_predictions
from intent_assets.model.classifier import ConstrainedClassifier
from intent_assets.model.head import is_head_model, make_classifier
from intent_assets.model.instructions import answers_with_lists, dataset_system_prompt, system_prompt
from intent_assets.model.metrics import classification_report, confusion_plot, render_markdown
from intent_assets.model.oos import apply_threshold, calibrate_threshold, oos_label, oos_report
from intent_assets.quality import MULTI_LABEL_BASELINES
from intent_assets.resources import ArtifactStore, InferenceEngine
from intent_assets.serving.champion import in_process_model_dir, is_quantized_dir, read_serving_info

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
    max_intents: Optional[int] = Field(default=None, ge=1, description="List answers (a multi-intent data set): at most this many labels per message. None: the largest label set of the training split.")


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

    A model trained on label sets (list answers) is scored twice: in the table above on the single-intent test
    messages (its first label), and in a multi-intent table on every test message, blends included, as sets
    (exact-set accuracy, micro/macro F1, intent count, by number of intents) beside the zero-shot base model asked for
    a list and two one-vs-rest baselines (TF-IDF, MiniLM) thresholded on validation.
    """
    taxonomy = Taxonomy.from_dict(intent_taxonomy)
    labels = taxonomy.names
    prompt = dataset_system_prompt(instruction_dataset["messages"])  # exactly the prompt the model was trained on
    lists = answers_with_lists(prompt)  # a multi-intent data set: every record answers with a list
    real = instruction_dataset[~instruction_dataset["synthetic"]]
    if lists:  # the single-label table scores single-intent messages; the multi-intent table every test message
        real = single_intent(real)
    train, test = real[real["split"] == "train"], real[real["split"] == "test"]
    max_test = inference.cap("test_examples", config.max_test_examples)  # the environment may cap it
    latency_requests = inference.cap("latency_requests", config.latency_requests)
    if max_test and len(test) > max_test:
        test = test.sample(n=max_test, random_state=config.seed).sort_index()
    texts, gold = test["text"].tolist(), test["intent"].tolist()
    if lists:
        sets_data = _set_rows(instruction_dataset)
        max_intents, allow_empty = list_decoding(sets_data.loc[sets_data["split"] == "train", "intents"], config.max_intents)
        set_test = sets_data[sets_data["split"] == "test"]
        if max_test and len(set_test) > max_test:
            set_test = set_test.sample(n=max_test, random_state=config.seed).sort_index()
        set_texts, gold_sets = set_test["text"].tolist(), [list(x) for x in set_test["intents"]]
        context.log.info(f"list answers: {len(set_texts)} test messages scored as sets, at most {max_intents} "
                         f"intents{', an empty list allowed' if allow_empty else ''}")
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

    confidences: dict[str, float] = {}  # text -> the fine-tuned model's confidence (for the OOS threshold)
    set_answers: dict[str, dict[str, tuple]] = {}  # system -> text -> labels (list answers)
    set_predictors: dict = {}
    oos_name = oos_label(labels)

    def llm(classifier, keep_confidence: bool = False, name: str = "", system: str = ""):
        if lists and answers_with_lists(system or prompt):
            def predict(batch):  # the first label of the list scores in the single-label table
                predictions = classifier.classify_sets(batch, max_intents=max_intents, batch_size=inference.batch_size,
                                                       allow_empty=allow_empty)
                set_answers.setdefault(name, {}).update((t, p.labels) for t, p in zip(batch, predictions))
                if keep_confidence:
                    confidences.update((t, min(p.confidences, default=1.0)) for t, p in zip(batch, predictions))
                # an empty list on a single-intent message is wrong: out-of-scope where the taxonomy has it, else
                # it shows as out-of-taxonomy in this table (the list itself can only hold taxonomy labels)
                return [p.labels[0] if p.labels else (oos_name or "") for p in predictions]
            set_predictors[name] = predict
            return predict

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
        zero_prompt = system_prompt(taxonomy, answers="intents" if lists else "intent")
        record(ZERO_SHOT, llm(ConstrainedClassifier(model, tokenizer, labels, zero_prompt), name=ZERO_SHOT, system=zero_prompt),
               inference.batch_size)
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
    record(served, llm(fine_tuned, keep_confidence=True, name=served), inference.batch_size)
    context.log.info(f"{served} ran on the {inference.kind} engine (the model as served)")
    if config.include_unserved_precision:  # in-process, like zero-shot: what the other precision scores
        if served == FINE_TUNED and has_16bit:
            model, tokenizer = inference.load(merged_dir)
            record(FINE_TUNED_16BIT, llm(make_classifier(model, tokenizer, labels, prompt), name=FINE_TUNED_16BIT),
                   inference.batch_size)
        elif served == FINE_TUNED_16BIT:
            model, tokenizer = inference.load(awq_model["model_dir"], quantized=True)
            record(FINE_TUNED, llm(make_classifier(model, tokenizer, labels, prompt), name=FINE_TUNED), inference.batch_size)
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
            record(champion_system, llm(make_classifier(model, tokenizer, labels, champion_prompt), name=champion_system,
                                        system=champion_prompt), inference.batch_size)
        else:
            context.log.warning(f"champion v{champion['version']}: model directory {champion['model_dir']} is missing")
    multi = None
    if lists:
        multi = _score_sets(context, config, sets_data, set_texts, gold_sets, labels, set_answers, set_predictors)
    oos_summary = None
    if oos_name is not None:  # out-of-scope requests go to a human: in-scope accuracy and OOS recall, separately
        for name in list(systems):
            systems[name]["out_of_scope"] = oos_report(gold, systems[name]["predictions"], oos_name)
        val = real[real["split"] == "validation"]
        if len(val) > config.max_validation_examples:
            val = val.sample(n=config.max_validation_examples, random_state=config.seed).sort_index()
        if len(val) and (val["intent"] == oos_name).any():
            if lists:  # a list answer: its first label and that label's confidence, as in the table above
                vs = fine_tuned.classify_sets(val["text"].tolist(), max_intents=max_intents,
                                              batch_size=inference.batch_size, allow_empty=allow_empty)
                val_labels = [p.labels[0] if p.labels else oos_name for p in vs]
                val_conf = [min(p.confidences, default=1.0) for p in vs]
            else:
                vp = fine_tuned.classify(val["text"].tolist(), batch_size=inference.batch_size)
                val_labels, val_conf = [p.label for p in vp], [p.confidence for p in vp]
            calib = calibrate_threshold(val["intent"].tolist(), val_labels, val_conf, oos_name)
            thresholded = apply_threshold(systems[served]["predictions"], [confidences[t] for t in texts], calib["threshold"], oos_name)
            name = f"{served} + confidence threshold {calib['threshold']:.3f}"
            systems[name] = {"metrics": classification_report(gold, thresholded, labels), "latency": systems[served]["latency"],
                             "out_of_scope": {**oos_report(gold, thresholded, oos_name), "threshold": calib["threshold"], "validation_examples": len(val)}}
        oos_summary = {name: {k: round(v, 4) for k, v in s["out_of_scope"].items()} for name, s in systems.items()}
    for s_ in systems.values():
        s_.pop("predictions", None)

    router = "classification head" if is_head_model(awq_model["model_dir"]) else "generative"
    report = {"title": f"Intent routing on the test split ({taxonomy.name} v{taxonomy.version})", "systems": systems,
              "fine_tuned": served, "n": len(texts), "run_key": awq_model["run_key"], "inference_engine": inference.kind,
              "router": router,
              "champion": {"system": champion_system, "version": champion["version"]} if champion_system else None,
              **({"multi_intent": multi} if multi else {})}
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
            "router": router,  # generative (constrained decoding of the label's name) or classification head
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
            **({"multi_intent": dg.MetadataValue.json(_multi_summary(multi)),
                "exact_set_accuracy": round(multi["systems"][served]["exact_set_accuracy"], 4)}
               if multi and served in multi["systems"] else {}),
        }
    )
    artifacts.publish(out)
    return {"report_dir": str(out), "summary": summary, "run_key": awq_model["run_key"], "fine_tuned": served,
            **({"out_of_scope": oos_summary} if oos_summary else {}),
            **({"multi_intent": _multi_summary(multi)} if multi else {})}


def _set_rows(instruction_dataset: pd.DataFrame) -> pd.DataFrame:
    """The records scored and trained on as label sets: real messages and blends (paraphrases are single-intent
    training help, not test material)."""
    blends = instruction_dataset["record_id"].map(is_blend)
    rows = instruction_dataset[~instruction_dataset["synthetic"] | blends]
    return rows.assign(intents=[list(x) for x in rows["intents"]])


def _score_sets(context, config, sets_data, texts, gold_sets, labels, set_answers, set_predictors) -> dict:
    """The multi-intent table: every system's label sets on every test message (blends included), with the
    one-vs-rest baselines (TF-IDF, MiniLM) trained on the same training sets and thresholded on validation."""
    train = sets_data[sets_data["split"] == "train"]
    val = sets_data[sets_data["split"] == "validation"]
    if val.empty:  # no validation split: the threshold is calibrated on the training sets (said in the report)
        val = train
    systems: dict[str, dict] = {}
    tfidf, minilm = MULTI_LABEL_BASELINES
    kinds = [(tfidf, "tfidf"), *([(minilm, "minilm")] if config.include_minilm else [])]
    for name, kind in kinds:
        model = multilabel_baseline(kind, train["text"].tolist(), train["intents"].tolist(), val["text"].tolist(),
                                    val["intents"].tolist(), labels=labels)
        systems[name] = {**multilabel_scores(gold_sets, model.predict_sets(texts), labels), "threshold": model.threshold}
    for name, answers in set_answers.items():
        missing = [t for t in dict.fromkeys(texts) if t not in answers]
        for start in range(0, len(missing), 64):
            set_predictors[name](missing[start:start + 64])
        predicted = [list(answers[t]) for t in texts]
        systems[name] = {**multilabel_scores(gold_sets, predicted, labels),
                         "oot_rate": float(sum(any(x not in labels for x in p) for p in predicted) / max(1, len(predicted)))}
    for name, m in systems.items():
        context.log.info(f"{name} (label sets): exact-set {m['exact_set_accuracy']:.3f}, micro-F1 {m.get('micro_f1', 0):.3f}")
    return {"n": len(texts), "systems": systems,
            "validation": "validation split" if not sets_data[sets_data["split"] == "validation"].empty else "training split"}


def _multi_summary(multi: dict) -> dict:
    return {name: {k: round(m[k], 4) for k in ("exact_set_accuracy", "micro_f1", "macro_f1", "count_accuracy") if k in m}
            for name, m in multi["systems"].items()}
