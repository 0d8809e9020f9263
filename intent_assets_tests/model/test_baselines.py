import pytest

from intent_assets.data.multi_intent import blend, multilabel_scores
from intent_assets.model.baselines import (minilm_baseline, minilm_dir, multilabel_baseline, tfidf_baseline,
                                           time_predictions)

TRAIN = {
    "card_arrival": ["where is my new card", "my card has not arrived yet", "still waiting for the card to come",
                     "when will my card be delivered", "card delivery is taking long", "has my card been sent"],
    "exchange_rate": ["what is the exchange rate today", "how much is one euro in dollars", "currency rate for pounds",
                      "which rate do you use to convert money", "exchange rates are too high", "euro to yen rate"],
    "lost_or_stolen_card": ["i lost my card", "someone stole my card", "my wallet with the card was stolen",
                            "cannot find my card anywhere", "card got stolen last night", "i misplaced my card"],
}
TEST = [("is my card on its way", "card_arrival"), ("what rate do you give for dollars", "exchange_rate"),
        ("my card was stolen", "lost_or_stolen_card"), ("the card never arrived", "card_arrival")]


def _data():
    texts = [t for ts in TRAIN.values() for t in ts]
    labels = [label for label, ts in TRAIN.items() for _ in ts]
    return texts, labels


def test_tfidf_learns_toy_data_deterministically():
    texts, labels = _data()
    model = tfidf_baseline(texts, labels)
    assert model.predict(texts) == labels
    predictions = model.predict([t for t, _ in TEST])
    assert all(isinstance(p, str) for p in predictions)
    assert sum(p == y for p, (_, y) in zip(predictions, TEST)) >= 3
    assert tfidf_baseline(texts, labels).predict([t for t, _ in TEST]) == predictions
    assert model.predict([]) == []


def test_rejects_single_class_and_length_mismatch():
    with pytest.raises(ValueError):
        tfidf_baseline(["a", "b"], ["x", "x"])
    with pytest.raises(ValueError):
        tfidf_baseline(["a", "b"], ["x"])


def test_minilm_learns_toy_data_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (minilm_dir() / "config.json").is_file()
    texts, labels = _data()
    model = minilm_baseline(texts, labels)
    predictions = model.predict([t for t, _ in TEST])
    assert predictions == [y for _, y in TEST]
    assert model.predict(texts) == labels


def test_time_predictions():
    texts, labels = _data()
    model = tfidf_baseline(texts, labels)
    predictions, summary = time_predictions(model.predict, texts, batch_size=5, single_requests=4)
    assert predictions == model.predict(texts)
    assert summary["single_requests"] == 4 and summary["batch_size"] == 5
    assert 0 < summary["p50_ms"] <= summary["p95_ms"]
    assert summary["throughput_per_s"] > 0


def _multi(seed, count):
    """Blends of the toy messages (2-3 intents each) plus single-intent ones and a few with no intent."""
    singles = [(t, [label]) for label, ts in TRAIN.items() for t in ts]
    empty = [("hello there", []), ("ok thanks", []), ("good morning", [])]
    return singles + empty + blend([(t, label) for label, ts in TRAIN.items() for t in ts], count, seed=seed)


@pytest.mark.parametrize("kind", ["tfidf", "minilm"])
def test_multilabel_baselines_find_every_intent_with_a_calibrated_threshold(kind, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train, validation = _multi(0, 60), _multi(1, 30)
    model = multilabel_baseline(kind, [t for t, _ in train], [s for _, s in train],
                                [t for t, _ in validation], [s for _, s in validation])
    assert 0.05 <= model.threshold <= 0.95 and model.allow_empty
    test = [("is my card on its way and what rate do you give for dollars", ["card_arrival", "exchange_rate"]),
            ("my card was stolen", ["lost_or_stolen_card"])]
    predicted = model.predict_sets([t for t, _ in test])
    assert set(test[0][1]) <= set(predicted[0]) and predicted[1] == test[1][1]
    assert model.predict_sets([]) == []
    # the calibrated threshold is the best of the grid on validation: at least as good as 0.5
    texts, sets = [t for t, _ in validation], [s for _, s in validation]
    chosen = model.calibrate(texts, sets)
    at_half = multilabel_scores(sets, model.sets_from(model.probabilities(texts), 0.5))
    assert chosen["exact_set_accuracy"] >= at_half["exact_set_accuracy"] and chosen["exact_set_accuracy"] > 0.5


def test_multilabel_baseline_without_empty_messages_always_names_one_intent():
    train = [(t, [label]) for label, ts in TRAIN.items() for t in ts]
    texts, sets = [t for t, _ in train], [s for _, s in train]
    model = multilabel_baseline("tfidf", texts, sets, texts, sets)
    assert not model.allow_empty
    assert all(len(p) >= 1 for p in model.sets_from(model.probabilities(["zzz qqq"]), threshold=0.99))
    with pytest.raises(ValueError, match="unknown multi-label baseline"):
        multilabel_baseline("bert", texts, sets, texts, sets)
