"""``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``: a multipart upload, billed by the audio's duration as
New API does (1,000 "duration tokens" a minute of ``ceil(seconds)``; whisper-1's ratio 3 is
$0.006 a minute), or, when the file's length cannot be read, by its size (one token per
started KB, New API's fallback). The duration is read from the upload before anything is
reserved (mutagen: mp3, m4a, ogg, flac, wav...), so the reservation is the charge.
"""

from __future__ import annotations

import io
import math
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import mutagen

from relaygate.relay import errors
from relaygate.relay.request import Metered

FILE_FIELD = "file"
TOKENS_PER_MINUTE = 1000


def parse_form(raw: bytes, content_type: str) -> dict[str, Any]:
    """The form's text fields as strings and the upload as bytes under ``file``."""
    if (
        not content_type.lower().startswith("multipart/form-data")
        or "boundary=" not in content_type
    ):
        raise errors.bad_request(
            "Send the audio as multipart/form-data (fields 'file' and 'model').", "invalid_form"
        )
    head = b"MIME-Version: 1.0\r\nContent-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    message = message_from_bytes(head + raw, policy=policy.default)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise errors.bad_request("The multipart body could not be parsed.", "invalid_form")
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if name == FILE_FIELD:
            form[name] = data
        else:
            form[name] = data.decode("utf-8", "replace")
    return form


def audio_seconds(data: bytes) -> float | None:
    """The audio's length, or None when mutagen cannot tell (an unknown or broken file)."""
    try:
        info = mutagen.File(io.BytesIO(data))
    except Exception:  # mutagen raises many kinds on garbage: all mean "unknown"
        return None
    length = getattr(getattr(info, "info", None), "length", None)
    if isinstance(length, int | float) and math.isfinite(length) and length > 0:
        return float(length)
    return None


def duration_tokens(data: bytes) -> tuple[int, bool]:
    """(tokens, estimated): New API's ``round(ceil(seconds) / 60 * 1000)``, or one token
    per started KB of the file when its length is unknown."""
    seconds = audio_seconds(data)
    if seconds is None:
        return max(1, math.ceil(len(data) / 1000)), True
    return round(math.ceil(seconds) / 60 * TOKENS_PER_MINUTE), False


def transcription_meter(body: dict[str, Any]) -> Metered:
    data = body.get(FILE_FIELD)
    if not isinstance(data, bytes) or not data:
        raise errors.bad_request("The form has no audio 'file'.", "invalid_file")
    tokens, estimated = duration_tokens(data)
    return tokens, 0, estimated
