"""Tests for intent_assets.model.quantization: LoRA merge + real llm-compressor AWQ on the real SmolLM2-135M (CPU).

The expensive part (one AWQ run, 3 calibration prompts of <= 64 tokens, ~1 min on 2 cores) is a module-scoped
fixture shared by the tests that inspect its output.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("llmcompressor")

from intent_assets.model import quantization as q  # noqa: E402


SYSTEM = "Classify the customer's banking message. Answer with one intent label."
USER_MESSAGES = [
    "I ordered a new card two weeks ago and it still has not arrived.",
    "Why was I charged a fee for a transfer to my friend?",
    "My top-up failed but the money left my account, please help.",
    "How do I change the PIN of my card?",
]


def chat(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


@pytest.fixture(scope="module")
def adapter_dir(base_model_dir, tmp_path_factory) -> Path:
    """A LoRA r=8 adapter on q_proj/v_proj with non-zero B (so that merging changes the model)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def merged_dir(base_model_dir, adapter_dir, tmp_path_factory) -> Path:
    """The merged model in the production dtype (bf16): the input of the quantization."""
    return q.merge_adapter(base_model_dir, adapter_dir, tmp_path_factory.mktemp("merged") / "merged")


@pytest.fixture(scope="module")
def quantized(merged_dir, tmp_path_factory) -> q.QuantizationResult:
    settings = q.QuantizationSettings(num_calibration_samples=3, max_calibration_tokens=64, seed=1)
    out = tmp_path_factory.mktemp("awq") / "awq_model"
    return q.quantize_awq(merged_dir, [chat(m) for m in USER_MESSAGES], out, settings)


def _prompt_ids(tokenizer, user: str):
    return tokenizer.apply_chat_template(chat(user), add_generation_prompt=True, return_tensors="pt", return_dict=True)


# ---------------------------------------------------------------------------------------------------------------
# Settings (cheap)
# ---------------------------------------------------------------------------------------------------------------


def test_settings_defaults_are_valid_for_smollm2():
    settings = q.QuantizationSettings()
    assert (settings.bits, settings.group_size, settings.symmetric) == (4, 64, True)
    assert settings.ignore == ("lm_head",)
    settings.validate(hidden_size=576, intermediate_size=1536)
    assert settings.weights_args() == {
        "num_bits": 4, "type": "int", "symmetric": True, "dynamic": False, "strategy": "group", "group_size": 64
    }
    assert "group size 64" in settings.scheme_description


def test_settings_reject_group_size_not_dividing_hidden_size():
    settings = q.QuantizationSettings(group_size=128)  # valid on its own...
    with pytest.raises(ValueError, match=r"group_size=128 does not divide the model's hidden_size \(576\)"):
        settings.validate(hidden_size=576, intermediate_size=1536)  # ...but not for SmolLM2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_calibration_samples": 0}, "num_calibration_samples"),
        ({"max_calibration_tokens": 0}, "max_calibration_tokens"),
        ({"bits": 5}, "bits"),
        ({"group_size": 0}, "group_size"),
        ({"dtype": "int8"}, "dtype"),
        ({"truncation_side": "middle"}, "truncation_side"),
    ],
)
def test_settings_reject_invalid_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        q.QuantizationSettings(**kwargs)


def test_settings_accept_list_ignore():
    assert q.QuantizationSettings(ignore=["lm_head", "re:.*down_proj"]).ignore == ("lm_head", "re:.*down_proj")


def test_pin_memory_patch_is_scoped_and_reversible():
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.__dict__["pin_memory"]
    with pytest.raises(KeyError):
        with q.pin_memory_disabled_without_accelerator() as patched:
            assert patched == (not torch.accelerator.is_available())
            if patched:
                cache = IntermediatesCache([{"x": _intermediate(torch.ones(2))}], None)
                cache.pin_memory(0)  # would raise "Cannot access accelerator device" unpatched
            raise KeyError("error inside the block")
    assert IntermediatesCache.__dict__["pin_memory"] is original


def _intermediate(tensor):
    from llmcompressor.pipelines.cache import IntermediateValue

    return IntermediateValue(value=tensor, device=None)


def test_check_quantized_config_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="no quantization_config"):
        q.check_quantized_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "awq"}}))
    with pytest.raises(ValueError, match="quant_method"):
        q.check_quantized_config(tmp_path)
    qc = {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 8, "group_size": 64}}}}
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": qc}))
    with pytest.raises(ValueError, match="8-bit"):
        q.check_quantized_config(tmp_path, bits=4)


# ---------------------------------------------------------------------------------------------------------------
# Calibration data and cheap validation against the real model folder
# ---------------------------------------------------------------------------------------------------------------


def test_calibration_samples_strings_and_messages(base_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    rendered = q.render_calibration_text(chat("hello"), tokenizer)
    assert rendered.startswith("<|im_start|>system\n" + SYSTEM)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert q.render_calibration_text(rendered, tokenizer) == rendered  # strings are used verbatim

    settings = q.QuantizationSettings(num_calibration_samples=2, seed=3)
    samples = [chat(m) for m in USER_MESSAGES] + ["   "]
    picked = q.select_calibration_texts(samples, tokenizer, settings)
    assert len(picked) == 2 and picked == q.select_calibration_texts(samples, tokenizer, settings)
    with pytest.raises(ValueError, match="No \\(non-empty\\) calibration samples"):
        q.select_calibration_texts(["", " "], tokenizer, settings)
    with pytest.raises(ValueError, match="role/content"):
        q.render_calibration_text([{"text": "x"}], tokenizer)

    # a long shared system prompt: left truncation keeps the differing tail, right truncation the shared head
    long_system = "You route messages. " * 100
    texts = [q.render_calibration_text([{"role": "system", "content": long_system}, {"role": "user", "content": m}],
                                       tokenizer) for m in USER_MESSAGES[:2]]
    left = q.tokenize_calibration(texts, tokenizer, q.QuantizationSettings(max_calibration_tokens=32))
    right = q.tokenize_calibration(
        texts, tokenizer, q.QuantizationSettings(max_calibration_tokens=32, truncation_side="right")
    )
    assert all(len(ids) == 32 for ids in left + right)
    assert left[0] != left[1] and right[0] == right[1]
    assert tokenizer.decode(left[0]).endswith("<|im_start|>assistant\n")
    assert tokenizer.truncation_side == "right"  # the tokenizer (saved with the model) is left untouched


def test_quantize_rejects_bad_group_size_before_loading(merged_dir, tmp_path):
    with pytest.raises(ValueError, match="does not divide the model's hidden_size"):
        q.quantize_awq(merged_dir, ["x"], tmp_path / "out", q.QuantizationSettings(group_size=128))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------
# Merge
# ---------------------------------------------------------------------------------------------------------------


def test_merge_matches_peft_model(base_model_dir, adapter_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = q.merge_adapter(base_model_dir, adapter_dir, tmp_path / "merged32", dtype="float32")
    assert out == tmp_path / "merged32"
    assert not list(tmp_path.glob(".merged32.*")), "temporary folder left behind"
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template
    assert not (out / "adapter_config.json").exists()

    ids = _prompt_ids(tokenizer, USER_MESSAGES[0])
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(**ids).logits
        peft_logits = PeftModel.from_pretrained(base, adapter_dir).eval()(**ids).logits
        merged_logits = merged(**ids).logits
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(merged_logits, peft_logits, atol=2e-3, rtol=1e-3)
    assert (peft_logits - base_logits).abs().max() > 0.05, "the adapter should change the model"


def test_merge_default_dtype_is_bf16(merged_dir):
    config = json.loads((merged_dir / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert "quantization_config" not in config
    assert (merged_dir / "chat_template.jinja").is_file() or "chat_template" in (
        merged_dir / "tokenizer_config.json"
    ).read_text()


# ---------------------------------------------------------------------------------------------------------------
# AWQ (one real llm-compressor run, shared)
# ---------------------------------------------------------------------------------------------------------------


def test_quantization_config_is_4bit_compressed_tensors(quantized):
    assert quantized.calibration_samples == quantized.distinct_calibration_samples == 3
    assert 0 < quantized.calibration_tokens <= 3 * 64
    config = json.loads((quantized.out_dir / "config.json").read_text())
    qconfig = config["quantization_config"]
    assert qconfig["quant_method"] == "compressed-tensors"
    assert qconfig["format"] == "pack-quantized"
    assert qconfig["ignore"] == ["lm_head"]
    (group,) = qconfig["config_groups"].values()
    assert group["targets"] == ["Linear"]
    weights = group["weights"]
    assert (weights["num_bits"], weights["type"], weights["strategy"], weights["group_size"], weights["symmetric"]) == (
        4, "int", "group", 64, True
    )
    assert group["input_activations"] is None  # W4A16: activations stay 16-bit
    assert quantized.quantization_config == qconfig
    assert "W4A16" in quantized.scheme


def test_weights_are_stored_packed(quantized, merged_dir):
    from safetensors import safe_open

    assert quantized.size_bytes_before == q.weight_bytes(merged_dir)
    assert quantized.size_bytes_after < 0.6 * quantized.size_bytes_before
    assert quantized.compression_ratio < 0.6
    (weights_file,) = quantized.out_dir.glob("*.safetensors")
    with safe_open(weights_file, framework="pt") as f:
        keys = set(f.keys())
        packed = f.get_tensor("model.layers.0.self_attn.q_proj.weight_packed")
        scale = f.get_tensor("model.layers.0.self_attn.q_proj.weight_scale")
    assert "model.layers.0.self_attn.q_proj.weight" not in keys
    assert packed.dtype == torch.int32 and tuple(packed.shape) == (576, 576 // 8)  # 8 int4 values per int32
    assert tuple(scale.shape) == (576, 576 // 64)  # one scale per group of 64 input channels
    n_packed = sum(k.endswith(".weight_packed") for k in keys)
    assert n_packed == 30 * 7  # every Linear of the 30 decoder layers, not lm_head (tied to the embeddings)


def test_manifest_and_atomic_write(quantized):
    manifest = json.loads(quantized.manifest_path.read_text())
    assert quantized.manifest_path == quantized.out_dir / "manifest.json"
    files = {entry["path"]: entry for entry in manifest["files"]}
    on_disk = {p.name for p in quantized.out_dir.iterdir() if p.name != "manifest.json"}
    assert set(files) == on_disk
    assert {"config.json", "tokenizer.json"} <= on_disk
    (weights_name,) = [name for name in files if name.endswith(".safetensors")]
    weights_path = quantized.out_dir / weights_name
    assert files[weights_name]["size_bytes"] == weights_path.stat().st_size
    assert files[weights_name]["sha256"] == hashlib.sha256(weights_path.read_bytes()).hexdigest()
    assert manifest["total_bytes"] == quantized.manifest_total_bytes == sum(f["size_bytes"] for f in files.values())
    assert manifest["calibration_samples"] == 3 and manifest["settings"]["group_size"] == 64
    assert [p.name for p in quantized.out_dir.parent.iterdir()] == [quantized.out_dir.name]  # no temp folders left
    json.dumps(quantized.to_metadata())  # JSON-friendly summary for asset metadata


def test_quantized_model_loads_and_generates(quantized, merged_dir):
    from transformers import AutoModelForCausalLM

    model, tokenizer = q.load_quantized_for_inference(quantized.out_dir, dtype="float32")
    layer = model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, torch.nn.Linear) and layer.weight.shape == (576, 576)
    # dequantized weights: at most 2**4 distinct values in each group of 64 input channels
    assert all(len(torch.unique(group)) <= 16 for group in layer.weight[0].split(64))

    reference = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    prompts = [*USER_MESSAGES, "What is the capital of France?"]
    agree = 0
    for user in prompts:
        ids = _prompt_ids(tokenizer, user)
        with torch.no_grad():
            quant_next = model(**ids).logits[0, -1].argmax().item()
            ref_top5 = reference(**ids).logits[0, -1].topk(5).indices.tolist()
        # greedy next token of the 4-bit model is among the unquantized model's 5 most likely
        assert quant_next in ref_top5, (tokenizer.decode([quant_next]), tokenizer.convert_ids_to_tokens(ref_top5))
        agree += quant_next == ref_top5[0]
    assert agree >= len(prompts) // 2

    # it generates text (a 135M model at 4 bits, calibrated on 3 prompts, is not expected to stay fully accurate)
    ids = _prompt_ids(tokenizer, "What is the capital of France?")
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    words = [w for w in text.split() if any(c.isalpha() for c in w)]
    assert len(words) >= 3, text
    assert text.split()[:2] == ["The", "capital"], text


def test_edge_layers_keep_the_first_and_last_decoder_layers_dense(tmp_path):
    """awq_model's keep_edge_layers: ignore patterns from the model's own depth, not a fixed layer number."""
    import re

    from intent_assets.assets.awq_model import edge_layers

    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 30}))
    [pattern] = edge_layers(tmp_path, 1)
    regex = re.compile(pattern.removeprefix("re:"))
    kept = {i for i in range(30) if regex.fullmatch(f"model.layers.{i}.mlp.down_proj")}
    assert kept == {0, 29} and not regex.fullmatch("model.layers.2.self_attn.q_proj")
    [pattern] = edge_layers(tmp_path, 2)
    regex = re.compile(pattern.removeprefix("re:"))
    assert {i for i in range(30) if regex.fullmatch(f"model.layers.{i}.self_attn.o_proj")} == {0, 1, 28, 29}
    assert edge_layers(tmp_path, 0) == []


def test_a_classification_head_quantizes_with_its_head_kept_16bit(head_router_dir, tmp_path):
    """head: classifier: the merged sequence-classification model goes through the same AWQ; its head (``score``)
    stays dense like ``lm_head``, the 4-bit model loads as a classifier with its labels, and its label
    probabilities stay close to the 16-bit model's."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from intent_assets.model.head import head_input_ids, head_input_text, head_labels, make_classifier, pad_batch

    labels = ["card_arrival", "transfer_fee", "top_up_failed", "change_pin"]
    merged = head_router_dir(labels)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    texts = [head_input_text(tokenizer, m) for m in USER_MESSAGES]  # calibrated on what the head reads
    settings = q.QuantizationSettings(num_calibration_samples=3, max_calibration_tokens=64, seed=1)
    result = q.quantize_awq(merged, texts, tmp_path / "awq", settings)
    assert "score" in result.quantization_config["ignore"]
    four_bit, tok = q.load_quantized_for_inference(result.out_dir, dtype="float32")
    assert type(four_bit).__name__ == "LlamaForSequenceClassification" and head_labels(result.out_dir) == labels
    sixteen = AutoModelForSequenceClassification.from_pretrained(merged, dtype=torch.float32)
    batch = pad_batch(tok, [head_input_ids(tok, m) for m in USER_MESSAGES])
    with torch.no_grad():
        p4, p16 = four_bit(**batch).logits.softmax(-1), sixteen(**batch).logits.softmax(-1)
    assert (p4 - p16).abs().max() < 0.2 and not torch.equal(p4, p16)  # 4-bit rounding moves them a little
    predictions = make_classifier(four_bit, tok, labels, SYSTEM).classify(USER_MESSAGES)
    assert all(p.label in labels for p in predictions)
