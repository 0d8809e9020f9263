import json
from pathlib import Path

import pandas as pd
import pytest

from intent_assets.data.taxonomy import (Taxonomy, TaxonomyError, is_multi_intent, labelled_messages, labels_long, load_taxonomy,
                                         partition_by_taxonomy, single_intent)
from intent_assets.paths import DEFAULT_TAXONOMY


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


# ------------------------------------------------------------------------------------------- derived taxonomies
from intent_assets.data.taxonomy import dataset_name, derive_taxonomy, resolve_taxonomy  # noqa: E402
from intent_assets.model.instructions import system_prompt  # noqa: E402
from intent_assets.paths import TAXONOMY_DIR  # noqa: E402

SHIPPED = [DEFAULT_TAXONOMY, TAXONOMY_DIR / "clinc150.json"]


def labelled(*labels):
    return pd.DataFrame({"record_id": [f"r{i}" for i in range(len(labels))], "intent": list(labels)})


def test_a_derived_taxonomy_is_the_sorted_labels_with_a_content_version():
    taxonomy = derive_taxonomy(labelled("b", "a", "c", "a"), "mine")
    assert taxonomy.names == ["a", "b", "c"] and taxonomy.name == "mine" and taxonomy.derived
    assert set(taxonomy.descriptions.values()) == {""}
    assert taxonomy.version.startswith("derived-")
    # the version depends on the set of labels only: not their order or counts; another label changes it
    assert derive_taxonomy(labelled("c", "a", "b"), "mine") == taxonomy
    assert derive_taxonomy(labelled("a", "b", "c", "d"), "mine").version != taxonomy.version
    # it survives the JSON round trip (descriptions may be empty because it is derived) ...
    assert Taxonomy.from_dict(taxonomy.to_dict()) == taxonomy
    # ... and a hand-written file still needs every description
    with pytest.raises(TaxonomyError, match="description of 'a' is empty"):
        Taxonomy.from_dict({**taxonomy.to_dict(), "derived": False})


@pytest.mark.parametrize("label", ["card arrival", 'say "hi"', "{x}", "tab\there", "back\\slash"])
def test_a_label_that_cannot_be_an_intent_name_is_an_error_naming_it_and_a_record(label):
    with pytest.raises(TaxonomyError, match="field intent") as info:
        derive_taxonomy(labelled("ok", label, label), "mine")
    assert repr(label) in str(info.value) and "record r1" in str(info.value)


def test_nothing_to_derive_from_is_an_error():
    with pytest.raises(TaxonomyError, match="no labelled customer messages"):
        derive_taxonomy(labelled(), "mine")
    with pytest.raises(TaxonomyError, match="not materialized"):
        resolve_taxonomy("derive", None, SHIPPED)


def test_auto_keeps_the_shipped_taxonomy_that_fits_the_data_else_derives():
    banking, _ = resolve_taxonomy("auto", labelled("card_arrival", "card_arrival", "teleport"), SHIPPED)
    assert banking.name == "banking77" and not banking.derived  # 2/3 covered: teleport is quarantined downstream
    clinc, how = resolve_taxonomy("auto", labelled("translate", "oos", "balance"), SHIPPED)
    assert clinc.name == "clinc150" and how["coverage"] == 1.0
    derived, how = resolve_taxonomy("auto", labelled("card_arrival", "teleport", "warp"), SHIPPED, name="star")
    assert derived.derived and derived.names == ["card_arrival", "teleport", "warp"] and derived.name == "star"
    assert how["candidates"]["banking77.json"] == pytest.approx(1 / 3, abs=1e-3)
    # no labels known yet (the corpus not materialized): the default file
    default, how = resolve_taxonomy("auto", None, SHIPPED)
    assert default == load_taxonomy(DEFAULT_TAXONOMY) and how["coverage"] is None


def test_a_configured_file_is_used_as_given_whatever_the_data():
    taxonomy, how = resolve_taxonomy(str(DEFAULT_TAXONOMY), labelled("teleport"), SHIPPED)
    assert taxonomy == load_taxonomy(DEFAULT_TAXONOMY) and how["mode"] == "file" and how["coverage"] == 0.0


@pytest.mark.parametrize(
    "source, name",
    [("../shared/data/banking77/train.csv", "banking77"), ("/d/clinc150/data_full.json", "clinc150"),
     ("/d/banking77", "banking77"), ("/d/export.csv.gz", "export"), (None, "derived")],
)
def test_a_derived_taxonomy_is_named_after_the_data(source, name):
    assert dataset_name(source) == name


def test_with_a_derived_taxonomy_nothing_is_quarantined_and_the_prompt_lists_names_only():
    frame = pd.DataFrame({"record_id": ["r0", "r1"], "intent": ["b_x", "a_y"], "text": ["t", "u"]})
    taxonomy = derive_taxonomy(frame, "mine")
    known, outside = partition_by_taxonomy(frame, taxonomy)
    assert len(known) == 2 and outside.empty
    prompt = system_prompt(taxonomy, describe_intents=True)
    assert prompt == system_prompt(taxonomy) and prompt.endswith("\n- a_y\n- b_x")
    assert f"(mine v{taxonomy.version})" in prompt
    # a file's descriptions are still in the described prompt
    assert "- card_arrival: " in system_prompt(load_taxonomy(DEFAULT_TAXONOMY), describe_intents=True)


def test_label_sets_are_training_data_and_every_label_must_be_in_the_taxonomy():
    """Customer messages with a label set are kept whole (several intents, or none); unlabelled ones and agents' turns
    are not training data; a set with one unknown label is set aside naming that label."""
    frame = pd.DataFrame({"record_id": ["a", "b", "c", "d", "e"],
                          "speaker": ["customer", "customer", "agent", "customer", "customer"],
                          "intent": ["card", "", "", "card", ""],
                          "intents": [["card"], None, None, ["card", "lost_stolen"], []]})
    labelled = labelled_messages(frame)
    assert list(labelled["record_id"]) == ["a", "d", "e"]
    assert list(labelled["intents"]) == [["card"], ["card", "lost_stolen"], []]
    assert list(labelled["intent"]) == ["card", "card", ""]
    assert is_multi_intent(labelled) and not is_multi_intent(labelled.iloc[:1])
    assert list(single_intent(labelled)["record_id"]) == ["a"]
    assert list(labels_long(labelled)["intent"]) == ["card", "card", "lost_stolen"]
    taxonomy = Taxonomy("t", "1", (("card", "cards"), ("greet", "hello")))
    known, outside = partition_by_taxonomy(labelled, taxonomy)
    assert list(known["record_id"]) == ["a", "e"]
    assert list(outside["reason"]) == ["intent 'lost_stolen' is not in taxonomy t v1"]
    # single-label input (no intents column) keeps its behaviour, and gains the one-element sets
    single = labelled_messages(frame.drop(columns="intents"))
    assert list(single["record_id"]) == ["a", "d"] and list(single["intents"]) == [["card"], ["card"]]


def test_an_ontology_as_nlupp_ships_it_is_a_taxonomy(tmp_path):
    (tmp_path / "nlupp" / "data").mkdir(parents=True)
    path = tmp_path / "nlupp" / "data" / "ontology.json"
    path.write_text(json.dumps({"intents": {"card": {"description": "cards", "domain": ["banking"]},
                                            "greet": {"description": "hello", "domain": ["general"]}},
                                "slots": {"date": {"description": "a date"}}}))
    taxonomy = load_taxonomy(path)
    assert (taxonomy.name, taxonomy.version, list(taxonomy.names)) == ("nlupp", "1", ["card", "greet"])
    shipped = Path("/work/shared/data/nlupp/data/ontology.json")
    if shipped.exists():
        assert len(load_taxonomy(shipped).names) == 62
