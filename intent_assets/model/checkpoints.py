"""Checkpoints that survive the pod (no Dagster import): ``lora_adapter`` publishes each checkpoint to the artifact
store as the trainer writes it (:class:`CheckpointPublisher`, ``train_lora``'s ``on_checkpoint``), and a fresh pod
resumes from the newest published one that verifies (:func:`restore_checkpoint`).

``artifacts`` is anything with the artifact store's ``children``, ``fetch``, ``publish`` and ``unpublish``
(:class:`ArtifactStore` here; ``intent_assets.resources.ArtifactStore`` implements it: no-ops on one machine, S3
prefixes with a manifest in prod).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Optional, Protocol

from intent_assets.model.training import _last_checkpoint


class ArtifactStore(Protocol):
    """What this module needs of the artifact store resource (a domain module does not import resources)."""

    def publish(self, directory: str | os.PathLike) -> Optional[str]: ...

    def unpublish(self, directory: str | os.PathLike) -> None: ...

    def fetch(self, directory: str | os.PathLike, missing_ok: bool = False) -> Path: ...

    def children(self, directory: str | os.PathLike) -> list[str]: ...


CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")


def published_checkpoints(artifacts: ArtifactStore, checkpoints: Path) -> list[str]:
    """Names of the checkpoints published under ``checkpoints`` (complete or not), newest first."""
    names = [name for name in artifacts.children(checkpoints) if CHECKPOINT_NAME.fullmatch(name)]
    return sorted(names, key=lambda name: int(CHECKPOINT_NAME.fullmatch(name).group(1)), reverse=True)


def restore_checkpoint(artifacts: ArtifactStore, checkpoints: Path, log, warn) -> tuple[Optional[str], list[str]]:
    """A fresh pod: with no checkpoint under ``checkpoints`` yet, fetch the newest published one that verifies
    against its manifest into ``checkpoints/<name>`` (its own ``run.json`` inside says which run it belongs to).

    A checkpoint that fails (half-published: no manifest; corrupted: a file that does not match it; no trainer
    state) is logged through ``warn`` and the next older one is tried: a broken checkpoint never fails the run, at
    worst training starts over. Returns ``(name fetched or None, names rejected)``.
    """
    if _last_checkpoint(checkpoints):
        return None, []  # this pod already has one (a retried step on the same machine): train_lora resumes it
    rejected = []
    for name in published_checkpoints(artifacts, checkpoints):
        target = checkpoints / name
        try:
            artifacts.fetch(target)
            if not (target / "trainer_state.json").is_file():
                raise FileNotFoundError("no trainer_state.json")
        except Exception as error:  # ManifestError, a missing object, ...: this checkpoint is unusable
            warn(f"checkpoint {name} in the artifact store is unusable, trying the next older one "
                 f"({type(error).__name__}: {error})")
            rejected.append(name)
            shutil.rmtree(target, ignore_errors=True)
            continue
        log(f"fetched {name} from the artifact store (verified): training resumes from it")
        _restore_best(artifacts, checkpoints, name, warn)
        return name, rejected
    return None, rejected


def _restore_best(artifacts: ArtifactStore, checkpoints: Path, fetched: str, warn) -> None:
    """Also fetch the best checkpoint so far (by validation loss) that ``fetched``'s trainer state names, when it is
    another one: the final adapter is restored from it (``load_best_model_at_end``). Without it the trainer
    ignores the missing best and the adapter is the last checkpoint's, hence a warning, not a failure."""
    try:
        best = json.loads((checkpoints / fetched / "trainer_state.json").read_text(encoding="utf-8")).get("best_model_checkpoint")
    except (OSError, ValueError):
        return
    name = Path(best).name if best else None
    if not name or name == fetched or not CHECKPOINT_NAME.fullmatch(name):
        return
    try:
        artifacts.fetch(checkpoints / name)
    except Exception as error:
        warn(f"best checkpoint {name} in the artifact store is unusable ({type(error).__name__}: {error}): the "
             f"adapter will be the last checkpoint's, not the best one's")
        shutil.rmtree(checkpoints / name, ignore_errors=True)


class CheckpointPublisher:
    """``train_lora``'s ``on_checkpoint``: publishes each checkpoint as its own prefix (``checkpoints/checkpoint-N/``
    with its own manifest, written last) as soon as the trainer has written it, so a pod preempted later, or even
    half-way through an upload, leaves every earlier checkpoint complete in the store. Checkpoints that are no
    longer on disk (rotated away by ``save_total_limit``, or an unusable one this run did not resume) are
    withdrawn from the store, manifest first. A failed upload is a warning: training goes on, the next checkpoint
    is another chance."""

    def __init__(self, artifacts: ArtifactStore, checkpoints: Path, log, warn):
        self.artifacts, self.checkpoints, self.log, self.warn = artifacts, checkpoints, log, warn
        self.published: list[str] = []
        self.withdrawn: list[str] = []

    def __call__(self, checkpoint: Path) -> None:
        try:
            uri = self.artifacts.publish(checkpoint)
            if uri:
                self.published.append(checkpoint.name)
                self.log(f"published {checkpoint.name} to {uri}")
            for name in published_checkpoints(self.artifacts, self.checkpoints):
                if not (self.checkpoints / name).is_dir():
                    self.artifacts.unpublish(self.checkpoints / name)
                    self.withdrawn.append(name)
                    self.log(f"withdrew {name} from the artifact store (no longer kept by the trainer)")
        except Exception as error:
            self.warn(f"could not publish {checkpoint.name} ({type(error).__name__}: {error}): training goes on")
