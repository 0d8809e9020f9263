"""Model directories as S3 prefixes with a manifest (files, sizes, sha256), verified on load (no Dagster import).

A directory ``d`` published to ``s3://bucket/prefix/`` becomes one object per file (``prefix/<relative path>``)
and, written last, ``prefix/_manifest.json``: an object that exists only once every file is in place, so a
reader never takes half a directory. Loading downloads every listed file into a temporary sibling folder,
checks each size and sha256 against the manifest, and only then moves it into place: a corrupted, truncated or
missing file raises ``ManifestError`` naming the file and the prefix. Nothing is ever pickled.

Works with any boto3 S3 client (``dagster_aws.s3.S3Resource.get_client()`` in the ``prod`` resources).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from intent_assets.paths import atomic_dir, sha256_file

MANIFEST_KEY = "_manifest.json"


class ManifestError(RuntimeError):
    """A directory (local or in S3) does not match its manifest."""


def directory_manifest(directory: str | os.PathLike, exclude: tuple[str, ...] = ()) -> dict:
    """Every file under ``directory`` (but the relative paths in ``exclude``): path, size and sha256."""
    directory = Path(directory)
    files = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel in exclude:
            continue
        files.append({"path": rel, "size_bytes": path.stat().st_size, "sha256": sha256_file(path)})
    return {"files": files, "total_bytes": sum(f["size_bytes"] for f in files)}


def verify_directory(directory: str | os.PathLike, manifest: dict, where: str | None = None) -> None:
    """Raise ``ManifestError`` unless every file of ``manifest`` is in ``directory`` with its size and sha256."""
    directory = Path(directory)
    where = where or str(directory)
    problems = []
    for entry in manifest["files"]:
        path = directory / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']}: missing")
        elif path.stat().st_size != entry["size_bytes"]:
            problems.append(f"{entry['path']}: {path.stat().st_size} bytes, manifest says {entry['size_bytes']}")
        elif (digest := sha256_file(path)) != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 {digest[:12]}…, manifest says {entry['sha256'][:12]}…")
    if problems:
        raise ManifestError(f"{where} does not match its manifest ({len(problems)} of {len(manifest['files'])} "
                            f"files): " + "; ".join(problems))


def _key(prefix: str, rel: str) -> str:
    return f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel


def read_manifest(client, bucket: str, prefix: str) -> dict | None:
    """The manifest of ``s3://bucket/prefix/``, or None where nothing complete was published there."""
    try:
        body = client.get_object(Bucket=bucket, Key=_key(prefix, MANIFEST_KEY))["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def upload_directory(client, bucket: str, prefix: str, directory: str | os.PathLike) -> dict:
    """Publish ``directory`` as ``s3://bucket/prefix/``: the files, then the manifest; stale objects removed."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot publish {directory}: not a directory")
    manifest = directory_manifest(directory)
    if read_manifest(client, bucket, prefix) == manifest:
        return manifest  # already published byte for byte (e.g. a base model fetched from this prefix)
    for entry in manifest["files"]:
        client.upload_file(str(directory / entry["path"]), bucket, _key(prefix, entry["path"]))
    keep = {_key(prefix, e["path"]) for e in manifest["files"]} | {_key(prefix, MANIFEST_KEY)}
    stale = [key for key in list_keys(client, bucket, prefix) if key not in keep]
    for start in range(0, len(stale), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in stale[start:start + 1000]]})
    client.put_object(Bucket=bucket, Key=_key(prefix, MANIFEST_KEY), Body=json.dumps(manifest, indent=1).encode(),
                      ContentType="application/json")
    return manifest


def delete_directory(client, bucket: str, prefix: str) -> int:
    """Remove ``s3://bucket/prefix/``: the manifest first (from then on readers see it as incomplete), then the rest.
    Returns the number of objects deleted."""
    keys = list_keys(client, bucket, prefix)
    manifest = _key(prefix, MANIFEST_KEY)
    if manifest in keys:
        client.delete_object(Bucket=bucket, Key=manifest)
    rest = [key for key in keys if key != manifest]
    for start in range(0, len(rest), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in rest[start:start + 1000]]})
    return len(keys)


def list_keys(client, bucket: str, prefix: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=_key(prefix, "")):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def download_directory(client, bucket: str, prefix: str, directory: str | os.PathLike) -> dict:
    """Make ``directory`` an exact, verified copy of ``s3://bucket/prefix/``; returns the manifest.

    A local copy that already matches the manifest is kept (no download). Otherwise the files are downloaded into
    a temporary sibling, verified, and only then replace ``directory``.
    """
    where = f"s3://{bucket}/{_key(prefix, '')}"
    manifest = read_manifest(client, bucket, prefix)
    if manifest is None:
        raise ManifestError(f"{where} has no {MANIFEST_KEY}: nothing was published there, or the upload did not finish")
    directory = Path(directory)
    if directory.is_dir():
        try:
            verify_directory(directory, manifest)
            return manifest
        except ManifestError:
            pass  # stale or partial local copy: download again
    with atomic_dir(directory) as tmp:
        for entry in manifest["files"]:
            target = tmp / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, _key(prefix, entry["path"]), str(target))
        verify_directory(tmp, manifest, where=where)
    return manifest


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> ("bucket", "some/prefix")."""
    bucket, _, prefix = uri[5:].partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return bucket, prefix.strip("/")


def main(argv: list[str] | None = None) -> int:
    """``python -m intent_assets.deploy.s3_artifacts download s3://bucket/prefix/ DIR`` (the vLLM init container) or
    ``upload DIR s3://bucket/prefix/``. Credentials from the standard AWS chain (IRSA in a pod)."""
    import argparse

    import boto3

    parser = argparse.ArgumentParser(prog="python -m intent_assets.deploy.s3_artifacts", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    down = sub.add_parser("download", help="copy a published prefix to DIR, verified against its manifest")
    down.add_argument("uri")
    down.add_argument("directory")
    up = sub.add_parser("upload", help="publish DIR as a prefix with a manifest")
    up.add_argument("directory")
    up.add_argument("uri")
    args = parser.parse_args(argv)
    bucket, prefix = parse_s3_uri(args.uri)
    client = boto3.client("s3")
    try:
        if args.command == "download":
            manifest = download_directory(client, bucket, prefix, args.directory)
            print(f"{args.uri} -> {args.directory}: {len(manifest['files'])} files, {manifest['total_bytes']} bytes, verified")
        else:
            manifest = upload_directory(client, bucket, prefix, args.directory)
            print(f"{args.directory} -> {args.uri}: {len(manifest['files'])} files, {manifest['total_bytes']} bytes")
    except ManifestError as error:
        print(f"error: {error}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
