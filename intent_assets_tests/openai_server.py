"""Canned-response OpenAI-compatible server on 127.0.0.1; the real `openai` client talks to it over HTTP.

Used by the tests of :mod:`intent_assets.data.augment` so that the production code
path (``openai.OpenAI(...).chat.completions.create``) is exercised end to end
without any network access or API key::

    with CannedOpenAIServer(make_paraphrase_responder(canned)) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="test", max_retries=0)
        ...
        assert len(srv.requests) == 1   # JSON bodies received by the server

Implemented endpoints:

* ``POST /v1/chat/completions`` -> a valid ``ChatCompletion`` JSON whose
  ``choices[0].message.content`` is ``responder(request_json)``.
* ``GET /v1/models`` -> a model list.

Every request must carry ``Authorization: Bearer <key>`` (401 JSON error
otherwise).  A responder may raise :class:`CannedHTTPError` to make the server
answer with that HTTP status (e.g. 500) and an OpenAI-style error body.

The server is a stdlib :class:`http.server.ThreadingHTTPServer` bound to port 0
(a free port) and served from a daemon thread; leaving the ``with`` block calls
``shutdown()`` and ``server_close()``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[dict], str]

__all__ = [
    "CannedHTTPError",
    "CannedOpenAIServer",
    "Responder",
    "canned_openai_server",
    "extract_intent",
    "failing_for",
    "make_paraphrase_responder",
    "prompt_text",
    "serve",
]


class CannedHTTPError(Exception):
    """Raise from a responder to make the server answer with ``status``."""

    def __init__(self, status: int, message: str = "canned server error", *, error_type: str = "server_error"):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.error_type = error_type


def _error_body(message: str, error_type: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _rough_tokens(text: str) -> int:
    return len(text.split())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects
    server_version = "CannedOpenAI/1.0"
    timeout = 10  # idle keep-alive connections are dropped after this

    # the owning CannedOpenAIServer, set on the per-server subclass
    owner: "CannedOpenAIServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        return

    # -- helpers -------------------------------------------------------
    def _send_json(self, status: int, payload: Mapping[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        match = re.fullmatch(r"Bearer\s+(\S+)", header.strip())
        if not match:
            self._send_json(401, _error_body(
                "Missing or malformed 'Authorization: Bearer ...' header.",
                "invalid_request_error", "invalid_api_key"))
            return False
        expected = self.owner.api_key
        if expected is not None and match.group(1) != expected:
            self._send_json(401, _error_body("Incorrect API key provided.", "invalid_request_error",
                                             "invalid_api_key"))
            return False
        return True

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    # -- verbs ---------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.owner._log(("GET", self._path()))
        if not self._authorized():
            return
        if self._path() == "/v1/models":
            created = int(self.owner.started_at)
            self._send_json(200, {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": created, "owned_by": "canned"}
                         for m in self.owner.models],
            })
            return
        self._send_json(404, _error_body(f"Unknown path {self.path!r}", "invalid_request_error", "not_found"))

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        raw = self._read_body()  # always drain the body so keep-alive stays in sync
        self.owner._log(("POST", self._path()))
        if not self._authorized():
            return
        if self._path() != "/v1/chat/completions":
            self._send_json(404, _error_body(f"Unknown path {self.path!r}", "invalid_request_error", "not_found"))
            return
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._send_json(400, _error_body(f"Request body is not valid JSON: {exc}", "invalid_request_error"))
            return
        if not isinstance(body, dict) or "model" not in body or not isinstance(body.get("messages"), list):
            self._send_json(400, _error_body("Body must be an object with 'model' and 'messages'.",
                                             "invalid_request_error"))
            return
        self.owner._record(body)
        try:
            content = self.owner.responder(body)
        except CannedHTTPError as exc:
            self._send_json(exc.status, _error_body(exc.message, exc.error_type))
            return
        except Exception as exc:  # a broken responder is a 500, not a hung test
            self._send_json(500, _error_body(f"responder crashed: {exc!r}", "server_error"))
            return
        prompt = prompt_text(body)
        prompt_tokens, completion_tokens = _rough_tokens(prompt), _rough_tokens(content)
        self._send_json(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_canned",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        })


class CannedOpenAIServer:
    """Context manager running the canned OpenAI-compatible server.

    Attributes (valid inside the ``with`` block):

    * ``base_url`` -- ``"http://127.0.0.1:PORT/v1"``, pass it to ``openai.OpenAI``.
    * ``requests`` -- JSON bodies of the chat-completion requests received
      (including the ones the responder failed), in arrival order.
    * ``log`` -- ``(method, path)`` of every HTTP request received.
    """

    def __init__(self, responder: Responder, *, api_key: str | None = None,
                 models: Sequence[str] = ("canned-model",)) -> None:
        self.responder = responder
        self.api_key = api_key  # None: any non-empty bearer token is accepted
        self.models = list(models)
        self.requests: list[dict] = []
        self.log: list[tuple[str, str]] = []
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- recording -----------------------------------------------------
    def _record(self, body: dict) -> None:
        with self._lock:
            self.requests.append(body)

    def _log(self, entry: tuple[str, str]) -> None:
        with self._lock:
            self.log.append(entry)

    # -- lifecycle -----------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server is not running")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "CannedOpenAIServer":
        if self._httpd is not None:
            raise RuntimeError("server already running")
        handler = type("_BoundHandler", (_Handler,), {"owner": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"canned-openai-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> "CannedOpenAIServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextmanager
def serve(responder: Responder, **kwargs: Any) -> Iterator[CannedOpenAIServer]:
    """``with serve(responder) as srv:`` -- functional spelling of the context manager."""
    with CannedOpenAIServer(responder, **kwargs) as srv:
        yield srv


# ---------------------------------------------------------------------------
# Responders
# ---------------------------------------------------------------------------

def prompt_text(body: Mapping[str, Any]) -> str:
    """All message contents of a chat-completion request, joined by newlines."""
    parts = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # content parts
            parts.extend(p.get("text", "") for p in content if isinstance(p, Mapping))
    return "\n".join(parts)


_INTENT_LINE = re.compile(r"^\s*Intent(?: name)?\s*:\s*[`\"']?([^\s`\"']+)", re.IGNORECASE | re.MULTILINE)


def extract_intent(body: Mapping[str, Any], known: Iterable[str] = ()) -> str | None:
    """Intent name of a paraphrase prompt.

    Reads an ``Intent: <name>`` line of the user message; failing that, the
    first known intent name that occurs as a whole word in the prompt.
    """
    text = prompt_text(body)
    match = _INTENT_LINE.search(text)
    if match:
        return match.group(1)
    hits = []
    for name in known:
        found = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)
        if found:
            hits.append((found.start(), name))
    return min(hits)[1] if hits else None


def _mangle(text: str) -> str:
    """Same text after case/spacing/punctuation changes: a normalized duplicate."""
    return "  " + text.upper().rstrip("?.!") + " ?!  "


def make_paraphrase_responder(
    canned: Mapping[str, Sequence[str]],
    *,
    include_duplicate: bool = True,
    include_pii: bool = True,
    include_off_intent: bool = True,
    off_intent_text: str | Mapping[str, str] | None = None,
    pii_email: str = "jane.doe@example.com",
) -> Responder:
    """Default responder: reasoning text, then ``{"paraphrases": [...]}``.

    The paraphrases are ``canned[intent]`` followed (by default) by three
    candidates the quality gate must reject:

    * a duplicate -- the first canned paraphrase upper-cased with different
      punctuation/spacing (``duplicate_of_existing`` once the first is accepted);
    * one with PII -- the first canned paraphrase plus an e-mail address
      (``contains_pii``);
    * an off-intent phrase -- ``off_intent_text`` (a string, or a mapping
      intent -> string), by default "quick question: " + the first canned
      paraphrase of another intent (``classifier_disagrees``).

    A prompt for an intent that is not in ``canned`` gets a reply without any
    JSON, i.e. one the parser cannot use.
    """
    names = sorted(canned)

    def respond(body: dict) -> str:
        intent = extract_intent(body, names)
        if intent not in canned or not canned[intent]:
            return f"Reasoning: I do not know the intent {intent!r}, so I cannot write paraphrases."
        good = list(canned[intent])
        out = list(good)
        if include_duplicate:
            out.append(_mangle(good[0]))
        if include_pii:
            out.append(f"{good[0].rstrip('?.! ')} - please reply to {pii_email}")
        if include_off_intent:
            if isinstance(off_intent_text, Mapping):
                text = off_intent_text.get(intent)
            else:
                text = off_intent_text
            if not text:
                others = [n for n in names if n != intent and canned[n]]
                # prefixed so it is not a verbatim copy of a candidate accepted for the other intent
                text = ("quick question: " + canned[others[0]][0]) if others else "what's the weather like tomorrow"
            out.append(text)
        reasoning = (
            f"Reasoning: the intent '{intent}' covers customers asking about this topic. "
            "They write short or long, formal or casual, sometimes lower-case with typos.\n"
            "Final:\n"
        )
        return reasoning + json.dumps({"paraphrases": out}, ensure_ascii=False)

    return respond


def failing_for(intents: Iterable[str], responder: Responder, *, status: int = 500,
                known: Iterable[str] = ()) -> Responder:
    """Wrap ``responder`` so prompts for ``intents`` get an HTTP ``status`` error."""
    failing = set(intents)
    known = list(known) or sorted(failing)

    def respond(body: dict) -> str:
        if extract_intent(body, known) in failing:
            raise CannedHTTPError(status, "canned failure for this intent")
        return responder(body)

    return respond


# ---------------------------------------------------------------------------
# pytest helper
# ---------------------------------------------------------------------------

try:  # pytest is a test-only dependency; keep the module importable without it
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def canned_openai_server() -> Iterator[Callable[..., CannedOpenAIServer]]:
        """Factory fixture: ``srv = canned_openai_server(responder)``; stopped at teardown.

        Import it into a test module (``from intent_assets_tests.openai_server
        import canned_openai_server``) to use it.
        """
        servers: list[CannedOpenAIServer] = []

        def start(responder: Responder, **kwargs: Any) -> CannedOpenAIServer:
            srv = CannedOpenAIServer(responder, **kwargs).start()
            servers.append(srv)
            return srv

        try:
            yield start
        finally:
            for srv in servers:
                srv.stop()
