"""``dagster dev`` on 127.0.0.1 for a test: a temporary instance and data folder, the ``tiny`` environment, a free
port; stopped (its whole process group, which this module started) when the test ends."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from intent_assets.paths import PROJECT_DIR

RUN_FIELDS = "runId status startTime endTime"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DagsterDev:
    url: str
    home: Path
    data_dir: Path
    log_path: Path

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def runs(self) -> list[dict]:
        data = self.graphql(f"{{ runsOrError {{ __typename ... on Runs {{ results {{ {RUN_FIELDS} }} }} }} }}")
        return data["runsOrError"]["results"]

    def failed_steps(self, run_id: str) -> list[str]:
        """Step keys with a failure event and their error messages (for an assertion message)."""
        query = """query($runId: ID!) { logsForRun(runId: $runId, limit: 5000) { __typename
            ... on EventConnection { events { __typename ... on ExecutionStepFailureEvent { stepKey error { message } } } } } }"""
        events = self.graphql(query, {"runId": run_id})["logsForRun"].get("events", [])
        return [f"{e['stepKey']}: {e['error']['message'][:2000]}" for e in events if e["__typename"] == "ExecutionStepFailureEvent"]

    def wait_for_run(self, run_id: str, timeout: float) -> str:
        """Polls the run's status until it ends (or ``timeout``); returns the final status."""
        deadline = time.monotonic() + timeout
        status = "UNKNOWN"
        while time.monotonic() < deadline:
            status = next((r["status"] for r in self.runs() if r["runId"] == run_id), "UNKNOWN")
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(3)
        return status

    def backfills(self) -> list[dict]:
        data = self.graphql("{ partitionBackfillsOrError { __typename ... on PartitionBackfills { results { id status numPartitions } } } }")
        return data["partitionBackfillsOrError"]["results"]

    def wait_for_backfill(self, backfill_id: str, timeout: float) -> str:
        """Polls an (asset) backfill until the daemon has launched and finished all its runs (or ``timeout``);
        returns its final status (``COMPLETED_SUCCESS`` when every run succeeded)."""
        deadline = time.monotonic() + timeout
        status = "UNKNOWN"
        while time.monotonic() < deadline:
            status = next((b["status"] for b in self.backfills() if b["id"] == backfill_id), "UNKNOWN")
            if status not in ("UNKNOWN", "REQUESTED", "CANCELING", "FAILING"):
                return status
            time.sleep(5)
        return status

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.is_file() else ""


def _wait_until_up(url: str, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited ({process.returncode}):\n{log_path.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"dagster dev did not answer on {url} within {timeout:.0f} s:\n{log_path.read_text(errors='replace')[-4000:]}")


def _stop(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGINT to dagster dev (it stops its webserver, daemon and code servers), then SIGKILL to what is left of
    the process group it leads (started by us with ``start_new_session``)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


@contextlib.contextmanager
def dagster_dev(tmp: Path, environment: str = "tiny", startup_timeout: float = 240) -> Iterator[DagsterDev]:
    home, data = tmp / "dagster_home", tmp / "data"
    home.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "INTENT_ASSETS_DATA_DIR": str(data),
        "INTENT_ASSETS_ENV": environment,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_DIR), os.environ.get("PYTHONPATH", "")) if p),
    }
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "INTENT_ASSETS_AUDIT_SALT"):
        env.pop(name, None)  # the embedded default: no paraphrase endpoint, a per-installation audit salt
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-w", str(PROJECT_DIR / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    log_path = tmp / "dagster_dev.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, log_path, startup_timeout)
        yield DagsterDev(url=url, home=home, data_dir=data, log_path=log_path)
    finally:
        _stop(process)
