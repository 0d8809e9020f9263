import json

import pandas as pd
import pytest

from intent_assets.paths import DEFAULT_TAXONOMY
from intent_assets.taxonomy import Taxonomy, TaxonomyError, load_taxonomy, partition_by_taxonomy


def test_shipped_taxonomy_loads():
    taxonomy = load_taxonomy(DEFAULT_TAXONOMY)
    assert taxonomy.name == "banking77" and len(taxonomy.names) == 77
    assert Taxonomy.from_dict(taxonomy.to_dict()) == taxonomy


@pytest.mark.parametrize(
    "intents, message",
    [
        ([{"name": "a", "description": "x"}, {"name": "a", "description": "y"}], "duplicated"),
        ([{"name": "bad name", "description": "x"}], "is not a label"),
        ([{"name": "a", "description": ""}], "description of 'a' is empty"),
        ([], "no intents"),
    ],
)
def test_invalid_taxonomies_are_rejected_with_the_field(tmp_path, intents, message):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"name": "t", "version": "1", "intents": intents}))
    with pytest.raises(TaxonomyError, match=message):
        load_taxonomy(path)


def test_fingerprint_changes_with_descriptions():
    a = Taxonomy("t", "1", (("x", "one"),))
    assert a.fingerprint != Taxonomy("t", "1", (("x", "two"),)).fingerprint


def test_unknown_labels_are_partitioned_out_with_a_reason():
    taxonomy = Taxonomy("t", "2", (("card_arrival", "d"),))
    frame = pd.DataFrame({"text": ["a", "b"], "intent": ["card_arrival", "teleport_me"]})
    known, outside = partition_by_taxonomy(frame, taxonomy)
    assert list(known["intent"]) == ["card_arrival"]
    assert outside.iloc[0]["field"] == "intent"
    assert outside.iloc[0]["reason"] == "intent 'teleport_me' is not in taxonomy t v2"
