"""Which upstream answers disable a channel, and the failover settings' parsing (issue 15)."""

from __future__ import annotations

import pytest

from relaygate.config import ConfigError, Settings, from_env
from relaygate.health import disable_reason

pytestmark = pytest.mark.unit

WORDS = Settings().auto_disable_keywords


def test_credential_refusals_and_keywords_disable():
    assert disable_reason(401, b"{}", WORDS) == "upstream answered HTTP 401"
    assert disable_reason(403, b"", ()) == "upstream answered HTTP 403"
    body = b'{"error":{"message":"You exceeded your current QUOTA, please check"}}'
    reason = disable_reason(429, body, WORDS)
    assert reason is not None and "you exceeded your current quota" in reason


def test_other_errors_and_connection_failures_do_not():
    assert disable_reason(429, b'{"error":{"message":"slow down"}}', WORDS) is None
    assert disable_reason(500, b"internal", WORDS) is None
    assert disable_reason(200, b"permission denied", WORDS) is None
    assert disable_reason(401, b"", WORDS, connection_failed=True) is None


def test_settings_parse():
    s = from_env(
        {
            "RELAYGATE_RETRY_STATUSES": "429, 502-503",
            "RELAYGATE_AUTO_DISABLE_KEYWORDS": "Balance Too Low|banned\nsuspended",
            "RELAYGATE_CHANNEL_ATTEMPTS": "5",
        }
    )
    assert s.retry_statuses == frozenset({429, 502, 503})
    assert s.auto_disable_keywords == ("balance too low", "banned", "suspended")
    assert s.channel_attempts == 5
    assert 529 in Settings().retry_statuses and 400 not in Settings().retry_statuses
    for bad in ("abc", "200", "503-502", "500-700"):
        with pytest.raises(ConfigError, match="RELAYGATE_RETRY_STATUSES"):
            from_env({"RELAYGATE_RETRY_STATUSES": bad})


def test_a_keyword_the_caller_sent_does_not_disable():
    """Upstreams echo the caller's argument names in their 400s: naming a keyword in a
    request must not take the channel offline for everyone (escaped or not)."""
    echo = b'{"error":{"message":"Unrecognized request argument supplied: Permission Denied"}}'
    assert disable_reason(400, echo, WORDS) is not None  # the body alone would disable
    assert disable_reason(400, echo, WORDS, sent=b'{"Permission Denied":1}') is None
    assert disable_reason(400, echo, WORDS, sent=b'{"Permission\\u0020Denied":1}') is None
    spent = b'{"error":{"message":"permission denied for this organization"}}'
    assert disable_reason(400, spent, WORDS, sent=b'{"model":"m"}') is not None
