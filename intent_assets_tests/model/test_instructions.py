import json

import pandas as pd
import pytest

from intent_assets.data.taxonomy import Taxonomy
from intent_assets.model import instructions as ins
from intent_assets.model.base_model import load_tokenizer

TAXONOMY = Taxonomy("t", "3", (("card_arrival", "Waiting for a card."), ("top_up_limits", "Limits on top-ups.")))


def examples():
    return pd.DataFrame(
        {
            "record_id": ["r1", "r2", "r3"],
            "split": ["train", "test", "validation"],
            "intent": ["card_arrival", "top_up_limits", "card_arrival"],
            "text": ["where is my card {{PERSON}}", "how much can I top up?", "card not here"],
            "synthetic": [False, False, True],
        }
    )


def test_records_have_identical_system_prompt_and_json_answers():
    records = ins.build_records(examples(), TAXONOMY)
    messages = [json.loads(m) for m in records["messages"]]
    systems = {m[0]["content"] for m in messages}
    assert len(systems) == 1
    system = systems.pop()
    assert "- card_arrival\n- top_up_limits" in system and "Waiting for a card" not in system and "t v3" in system
    assert [m[1]["content"] for m in messages] == list(examples()["text"])
    assert [ins.parse_answer(m[2]["content"]) for m in messages] == list(examples()["intent"])
    assert [m["role"] for m in messages[0]] == ["system", "user", "assistant"]


def test_descriptions_only_on_request():
    described = ins.system_prompt(TAXONOMY, describe_intents=True)
    assert "- card_arrival: Waiting for a card.\n- top_up_limits: Limits on top-ups." in described
    assert len(ins.system_prompt(TAXONOMY)) < len(described)
    records = ins.build_records(examples(), TAXONOMY, describe_intents=True)
    assert ins.dataset_system_prompt(records["messages"]) == described


def test_compact_prompt_names_the_taxonomy_but_lists_no_intent():
    compact = ins.system_prompt(TAXONOMY, style="compact")
    assert "t v3" in compact and "card_arrival" not in compact and '{"intent": "<name>"}' in compact
    records = ins.build_records(examples(), TAXONOMY, style="compact")
    assert ins.dataset_system_prompt(records["messages"]) == compact
    assert [ins.parse_answer(json.loads(m)[2]["content"]) for m in records["messages"]] == list(examples()["intent"])
    with pytest.raises(ValueError, match="describe_intents needs the 'taxonomy' prompt style"):
        ins.system_prompt(TAXONOMY, describe_intents=True, style="compact")
    with pytest.raises(ValueError, match="prompt style 'short'"):
        ins.system_prompt(TAXONOMY, style="short")


def test_dataset_system_prompt_refuses_mixed_prompts():
    mixed = pd.concat([ins.build_records(examples(), TAXONOMY), ins.build_records(examples(), TAXONOMY, True)])
    with pytest.raises(ValueError, match="found 2"):
        ins.dataset_system_prompt(mixed["messages"])


@pytest.mark.parametrize("content, expected", [('{"intent": "x"}', "x"), ("intent: x", None), ('{"intent": 3}', None), ("[]", None)])
def test_parse_answer(content, expected):
    assert ins.parse_answer(content) == expected


def test_write_jsonl_one_file_per_split(tmp_path):
    paths = ins.write_jsonl(ins.build_records(examples(), TAXONOMY), tmp_path)
    assert sorted(paths) == ["test", "train", "validation"]
    line = json.loads(paths["train"].read_text().splitlines()[0])
    assert line["record_id"] == "r1" and line["messages"][2]["content"] == '{"intent": "card_arrival"}'


def test_token_lengths_with_the_base_model_tokenizer(tmp_path):
    tokenizer = load_tokenizer(tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").is_file()  # cached for the next call
    records = ins.build_records(examples(), TAXONOMY)
    lengths = ins.token_lengths(tokenizer, records["messages"])
    system_tokens = len(tokenizer(ins.system_prompt(TAXONOMY))["input_ids"])
    assert len(lengths) == 3 and (lengths > system_tokens).all()
    assert ins.length_stats(lengths)["max"] == lengths.max()
    assert load_tokenizer(tmp_path / "tok").get_vocab() == tokenizer.get_vocab()


def test_list_answers_for_every_record_of_a_multi_intent_data_set(tmp_path):
    frame = examples().assign(intents=[["card_arrival", "top_up_limits"], [], ["card_arrival"]])
    records = ins.build_records(frame, TAXONOMY, style="compact", answers="intents")
    answers = [json.loads(m)[-1]["content"] for m in records["messages"]]
    assert answers == ['{"intents": ["card_arrival", "top_up_limits"]}', '{"intents": []}', '{"intents": ["card_arrival"]}']
    assert [ins.parse_answer_set(a) for a in answers] == [["card_arrival", "top_up_limits"], [], ["card_arrival"]]
    assert ins.answer_format(records["messages"]) == "intents"
    assert ins.answer_format(ins.build_records(examples(), TAXONOMY)["messages"]) == "intent"
    prompt = json.loads(records["messages"][0])[0]["content"]
    assert "all the intents it carries" in prompt and '{"intents": ["<name>", ...]}' in prompt and "exactly one" not in prompt
    assert ins.parse_answer_set('{"intents": "card_arrival"}') is None and ins.parse_answer_set("nope") is None
    paths = ins.write_jsonl(records, tmp_path)
    first = json.loads(paths["train"].read_text().splitlines()[0])
    assert first["intents"] == ["card_arrival", "top_up_limits"] and first["intent"] == "card_arrival"
    with pytest.raises(ValueError, match="answer format 'set'"):
        ins.system_prompt(TAXONOMY, answers="set")


def test_list_order_canonical_for_annotated_sets_and_as_stated_for_blends():
    frame = examples().assign(intents=[["top_up_limits", "card_arrival"], [], ["card_arrival", "top_up_limits"]],
                              record_id=["r1", "r2", "blend-1"])
    answers = lambda order: [json.loads(m)[-1]["content"] for m in  # noqa: E731
                             ins.build_records(frame, TAXONOMY, style="compact", answers="intents",
                                               **({"list_order": order} if order else {}))["messages"]]
    stated = answers("stated")  # as the records give them
    assert stated[0] == '{"intents": ["top_up_limits", "card_arrival"]}'
    canonical = answers("taxonomy")  # one answer per set
    assert canonical[0] == canonical[2] == '{"intents": ["card_arrival", "top_up_limits"]}' and canonical[1] == '{"intents": []}'
    blend = frame.assign(intents=[["top_up_limits", "card_arrival"], [], ["top_up_limits", "card_arrival"]])
    auto = [json.loads(m)[-1]["content"] for m in ins.build_records(blend, TAXONOMY, answers="intents")["messages"]]
    assert auto[0] == canonical[0] and auto[2] == '{"intents": ["top_up_limits", "card_arrival"]}'  # the default: auto
    assert "else in the taxonomy's order" in ins.system_prompt(TAXONOMY, style="compact", answers="intents")
    assert "in the taxonomy's order" in ins.system_prompt(TAXONOMY, answers="intents", list_order="taxonomy")
    assert "in the order the message states them" in ins.system_prompt(TAXONOMY, answers="intents", list_order="stated")
    assert ins.system_prompt(TAXONOMY, list_order="taxonomy") == ins.system_prompt(TAXONOMY)  # one label: no order
    with pytest.raises(ValueError, match="list order 'random'"):
        ins.system_prompt(TAXONOMY, answers="intents", list_order="random")
