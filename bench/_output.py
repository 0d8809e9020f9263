"""Shared by the bench scripts that print a JSON result."""

import json
import os
from pathlib import Path


def emit(result: dict, json_path: str | None) -> int:
    """Record the load average at the end, print ``result`` as JSON, also write it to ``json_path``; exit code 0."""
    result["load_at_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(result, indent=1)
    print(text)
    if json_path:
        Path(json_path).write_text(text, encoding="utf-8")
    return 0
