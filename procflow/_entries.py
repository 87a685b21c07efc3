"""Checkpoint entries: the JSON object the store keeps for each finished call.

An entry is ``{"call", "task", "fp", "status", "attempts", "session"[, "deps"],
"value" | "error"[, "cached"]}`` (docs/runs-and-resume.md). Encoding entries is the
largest per-call cost of a group commit, so the common one (a call that succeeded at
its first attempt, or a cache hit) is written by string formatting around its attempt
record, which the worker already encoded while the driver was busy; the rest go
through ``dumps``. Both produce the same text (tests/unit/test_entries.py).
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii as _quote
from typing import TYPE_CHECKING, Any

from ._keys import compact_encoder

if TYPE_CHECKING:
    from ._calls import Call

__all__ = ["dumps", "encode_attempt", "entry", "entry_text"]


# The store's JSON: compact, ASCII only (ensure_ascii escapes lone surrogates, which
# SQLite cannot store), with its encoder built once (it encodes every attempt record).
dumps = compact_encoder(sort_keys=False, ascii=True)


def encode_attempt(meta: dict[str, Any], attempt: int) -> str:
    """The text of ``dict(meta, attempt=attempt)``, the attempt record the driver keeps."""
    return dumps(dict(meta, attempt=attempt))


def entry(call: Call, ok: bool, payload: Any, cached: bool, session: int) -> dict[str, Any]:
    """The entry of a finished call, as a dict."""
    record: dict[str, Any] = {
        "call": call.call_id,
        "task": call.task.name,
        "fp": call.task.fingerprint,
        "status": "ok" if ok else "error",
        "attempts": call.attempts,
        "session": session,
    }
    if call.dep_ids:
        record["deps"] = call.dep_ids
    if ok:
        record["value"] = payload
        if cached:
            record["cached"] = True
    else:
        record["error"] = {
            "type": payload["type"],
            "message": payload["message"][:2000],
            "kind": payload["kind"],
            "traceback": payload["traceback"][-8000:],
        }
    return record


def entry_text(call: Call, ok: bool, payload: Any, cached: bool, session: int) -> str:
    """The entry's JSON text: formatted around the encoded attempt when there is one
    attempt that succeeded, else ``dumps(entry(...))``."""
    attempt = call.attempt_json
    if not ok or attempt is None or len(call.attempts) != 1:
        return dumps(entry(call, ok, payload, cached, session))
    deps = f',"deps":{dumps(call.dep_ids)}' if call.dep_ids else ""
    tail = ',"cached":true}' if cached else "}"
    return (
        f'{{"call":{_quote(call.call_id)},"task":{_quote(call.task.name)},'
        f'"fp":{_quote(call.task.fingerprint)},"status":"ok","attempts":[{attempt}],'
        f'"session":{int(session)}{deps},"value":{_quote(payload)}{tail}'
    )
