import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from intent_assets.model.metrics import OOT, classification_report, confusion_plot, latency_summary, render_markdown

LABELS = ["a", "b", "c", "d"]  # "d" is never predicted nor true: zero-division cases
Y_TRUE = ["a", "a", "a", "b", "b", "c", "c", "c", "c", "a"]
Y_PRED = ["a", "b", "a", "b", "c", "c", "c", "a", "c", "a"]


def test_matches_sklearn_without_oot():
    r = classification_report(Y_TRUE, Y_PRED, LABELS)
    assert r["accuracy"] == pytest.approx(accuracy_score(Y_TRUE, Y_PRED))
    for avg in ("macro", "micro", "weighted"):
        expected = f1_score(Y_TRUE, Y_PRED, labels=LABELS, average=avg, zero_division=0)
        assert r[f"{avg}_f1"] == pytest.approx(expected)
    p, rec, f, s = precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=LABELS, zero_division=0)
    for i, label in enumerate(LABELS):
        got = r["per_intent"][label]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p[i], rec[i], f[i]))
        assert got["support"] == s[i]
    m = np.array(r["confusion_matrix"])
    assert (m[:, :4] == confusion_matrix(Y_TRUE, Y_PRED, labels=LABELS)).all()
    assert (m[:, 4] == 0).all() and r["oot_rate"] == 0.0
    assert r["micro_f1"] == pytest.approx(r["accuracy"])


def test_out_of_taxonomy_predictions():
    y_pred = ["a", "zzz", "a", "b", "", "c", "c", "a", "c", "a"]
    r = classification_report(Y_TRUE, y_pred, LABELS)
    assert r["oot_rate"] == pytest.approx(0.2) and r["oot_count"] == 2
    assert r["accuracy"] == pytest.approx(accuracy_score(Y_TRUE, y_pred))
    for avg in ("macro", "micro", "weighted"):  # sklearn with labels= ignores the unknown predictions the same way
        expected = f1_score(Y_TRUE, y_pred, labels=LABELS, average=avg, zero_division=0)
        assert r[f"{avg}_f1"] == pytest.approx(expected)
    assert r["matrix_columns"][-1] == OOT
    m = np.array(r["confusion_matrix"])
    assert m.sum() == len(Y_TRUE) and m[:, -1].sum() == 2
    assert {"true": "a", "predicted": OOT, "count": 1} in r["most_confused"]


def test_most_confused_sorted_and_topk():
    y_true = ["a"] * 5 + ["b"] * 3 + ["c"] * 2
    y_pred = ["b", "b", "b", "a", "a", "c", "c", "b", "a", "c"]
    r = classification_report(y_true, y_pred, LABELS, top_k=2)
    assert r["most_confused"] == [{"true": "a", "predicted": "b", "count": 3},
                                  {"true": "b", "predicted": "c", "count": 2}]


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        classification_report(["a"], ["a", "b"], LABELS)
    with pytest.raises(ValueError):
        classification_report(["x"], ["a"], LABELS)


def test_latency_summary():
    s = latency_summary([0.1, 0.2, 0.3, 0.4], total_wall_s=2.0, n=10)
    assert s["p50_ms"] == pytest.approx(250.0)
    assert s["p95_ms"] == pytest.approx(np.percentile([100, 200, 300, 400], 95))
    assert s["mean_ms"] == pytest.approx(250.0)
    assert s["throughput_per_s"] == pytest.approx(5.0)


def test_confusion_plot_png(tmp_path):
    labels = [f"intent_{i}" for i in range(77)]
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 5, size=(77, 78))
    png = confusion_plot(matrix, labels, tmp_path / "cm.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cm.png").read_bytes() == png
    with pytest.raises(ValueError):
        confusion_plot(np.zeros((3, 3)), labels)


def test_render_markdown_only_labels_and_numbers():
    r = classification_report(Y_TRUE, ["a", "zzz", "a", "b", "c", "c", "c", "a", "c", "a"], LABELS)
    base = classification_report(Y_TRUE, Y_PRED, LABELS)
    report = {
        "title": "banking77 test",
        "n": len(Y_TRUE),
        "fine_tuned": "fine-tuned",
        "systems": {
            "tfidf": {"metrics": base, "latency": latency_summary([0.001] * 10, 0.01, 10)},
            "fine-tuned": {"metrics": r, "latency": latency_summary([0.2] * 10, 1.0, 10)},
            "base (no latency)": {"metrics": base},
        },
    }
    md = render_markdown(report)
    assert "| tfidf | 70.0% |" in md
    assert "| fine-tuned |" in md and "| base (no latency) |" in md
    assert "## Per-intent scores: fine-tuned" in md
    assert f"| a | {OOT} | 1 |" in md
    assert "OOT rate" in md and "10.0%" in md  # the fine-tuned system's out-of-taxonomy rate
    assert "zzz" not in md  # a raw out-of-taxonomy prediction is never echoed


def test_render_markdown_adds_the_label_set_table_when_the_report_has_one():
    from intent_assets.data.multi_intent import multilabel_scores

    gold = [["a"], ["a", "b"], ["b", "c"], []]
    report = {"systems": {"tfidf": {"metrics": classification_report(Y_TRUE, Y_PRED, LABELS)}},
              "multi_intent": {"n": 4, "validation": "validation split", "systems": {
                  "fine-tuned": multilabel_scores(gold, [["a"], ["a", "b"], ["b"], []], LABELS),
                  "one-vs-rest": multilabel_scores(gold, [["a"], ["a"], ["c", "b"], ["a"]], LABELS)}}}
    md = render_markdown(report)
    assert "## Multi-intent messages (label sets)" in md and "(4 messages, blends included)" in md
    assert "| fine-tuned | 75.0% |" in md and "| one-vs-rest | 50.0% |" in md
    assert "0: 100.0% (n=1), 1: 100.0% (n=1), 2: 50.0% (n=2)" in md
    assert "Multi-intent" not in render_markdown({"systems": report["systems"]})


def test_report_holds_only_plain_python_values():
    """The report becomes JSON and Dagster metadata: a numpy scalar anywhere breaks Dagster's event serializer."""
    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from walk(v)
        else:
            yield value

    report = classification_report(Y_TRUE, Y_PRED, LABELS)
    summary = latency_summary([0.01, 0.02], 0.05, 2)
    bad = [type(v) for v in [*walk(report), *walk(summary)] if type(v) not in (str, int, float, bool)]
    assert not bad
