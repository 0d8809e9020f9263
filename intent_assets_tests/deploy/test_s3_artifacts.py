"""Model directories as S3 prefixes with a verified manifest, with the real boto3 client against a moto server."""

import json

import pytest

from intent_assets.deploy.s3_artifacts import (
    MANIFEST_KEY,
    ManifestError,
    directory_manifest,
    download_directory,
    list_keys,
    read_manifest,
    upload_directory,
)


@pytest.fixture
def model_dir(tmp_path):
    """A small stand-in for a Hugging Face model directory (weights, config, nested tokenizer files)."""
    d = tmp_path / "model"
    (d / "tokenizer").mkdir(parents=True)
    (d / "model.safetensors").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (d / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}')
    return d


@pytest.fixture
def bucket(s3_client, request):
    name = f"artifacts-{request.node.name.replace('_', '-')[:40]}".lower()
    s3_client.create_bucket(Bucket=name)
    return name


def test_a_model_directory_round_trips_byte_for_byte(s3_client, bucket, model_dir, tmp_path):
    manifest = upload_directory(s3_client, bucket, "artifacts/awq_model/run1/quantized", model_dir)
    assert {f["path"] for f in manifest["files"]} == {"model.safetensors", "config.json", "tokenizer/tokenizer.json"}
    assert set(list_keys(s3_client, bucket, "artifacts/awq_model/run1/quantized")) == {
        f"artifacts/awq_model/run1/quantized/{p}"
        for p in ("model.safetensors", "config.json", "tokenizer/tokenizer.json", MANIFEST_KEY)
    }
    out = tmp_path / "elsewhere" / "quantized"
    assert download_directory(s3_client, bucket, "artifacts/awq_model/run1/quantized", out) == manifest
    assert directory_manifest(out) == manifest
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temporary folder left behind


def test_a_corrupted_file_in_s3_fails_the_manifest_check_and_leaves_nothing(s3_client, bucket, model_dir, tmp_path):
    upload_directory(s3_client, bucket, "m", model_dir)
    s3_client.put_object(Bucket=bucket, Key="m/model.safetensors", Body=b"\0" * (1 << 20))  # same size, other bytes
    out = tmp_path / "copy"
    with pytest.raises(ManifestError, match=r"s3://.*/m/ does not match its manifest.*model\.safetensors: sha256"):
        download_directory(s3_client, bucket, "m", out)
    assert not out.exists()


def test_a_truncated_or_missing_file_is_named(s3_client, bucket, model_dir, tmp_path):
    upload_directory(s3_client, bucket, "m", model_dir)
    s3_client.put_object(Bucket=bucket, Key="m/config.json", Body=b"{}")
    with pytest.raises(ManifestError, match=r"config\.json: 2 bytes, manifest says"):
        download_directory(s3_client, bucket, "m", tmp_path / "copy")


def test_an_unfinished_upload_has_no_manifest_and_is_refused(s3_client, bucket, model_dir, tmp_path):
    s3_client.upload_file(str(model_dir / "config.json"), bucket, "half/config.json")
    assert read_manifest(s3_client, bucket, "half") is None
    with pytest.raises(ManifestError, match="has no _manifest.json"):
        download_directory(s3_client, bucket, "half", tmp_path / "copy")


def test_republishing_removes_stale_files_and_a_good_local_copy_is_kept(s3_client, bucket, model_dir, tmp_path):
    upload_directory(s3_client, bucket, "m", model_dir)
    (model_dir / "tokenizer" / "tokenizer.json").unlink()
    upload_directory(s3_client, bucket, "m", model_dir)
    assert "m/tokenizer/tokenizer.json" not in list_keys(s3_client, bucket, "m")
    out = tmp_path / "copy"
    download_directory(s3_client, bucket, "m", out)
    before = (out / "model.safetensors").stat().st_mtime_ns
    download_directory(s3_client, bucket, "m", out)  # verified in place, not downloaded again
    assert (out / "model.safetensors").stat().st_mtime_ns == before


def test_the_command_line_downloads_and_verifies_as_the_vllm_init_container_does(s3_endpoint, s3_client, bucket,
                                                                                  model_dir, tmp_path, monkeypatch, capsys):
    from intent_assets.deploy.s3_artifacts import main

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    assert main(["upload", str(model_dir), f"s3://{bucket}/awq/run1/quantized/"]) == 0
    assert main(["download", f"s3://{bucket}/awq/run1/quantized/", str(tmp_path / "models")]) == 0
    assert directory_manifest(tmp_path / "models") == directory_manifest(model_dir)
    s3_client.put_object(Bucket=bucket, Key="awq/run1/quantized/config.json", Body=b"{}")
    assert main(["download", f"s3://{bucket}/awq/run1/quantized/", str(tmp_path / "again")]) == 2
    assert "config.json: 2 bytes" in capsys.readouterr().out


def test_republishing_an_unchanged_directory_uploads_nothing(s3_client, bucket, model_dir):
    upload_directory(s3_client, bucket, "m", model_dir)
    before = s3_client.head_object(Bucket=bucket, Key="m/model.safetensors")["LastModified"]
    calls = []
    original = s3_client.upload_file
    s3_client.upload_file = lambda *a, **k: calls.append(a) or original(*a, **k)
    upload_directory(s3_client, bucket, "m", model_dir)
    assert calls == [] and s3_client.head_object(Bucket=bucket, Key="m/model.safetensors")["LastModified"] == before
