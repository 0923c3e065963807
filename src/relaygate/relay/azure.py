"""Azure OpenAI channels (type 3): the OpenAI dialect at a deployment URL.

``{base_url}/openai/deployments/{deployment}/chat/completions?api-version={version}``, the
key in an ``api-key`` header (relaygate.channels builds it). The deployment is the upstream
model (after ``model_mapping``) without dots, as New API and One API name them
(``gpt-3.5-turbo`` -> ``gpt-35-turbo``); map a model to the exact deployment name when it
differs. The api-version is the channel's ``other`` field, else ``DEFAULT_API_VERSION``.
"""

from __future__ import annotations

from urllib.parse import quote

from relaygate.channels import Channel

DEFAULT_API_VERSION = "2024-10-21"  # the current generally available data-plane version


def url(channel: Channel, path: str, model: str) -> str:
    """The deployment URL of an OpenAI route (``/v1/chat/completions`` etc.)."""
    route = path.removeprefix("/v1")
    deployment = quote(model.replace(".", ""), safe="")
    version = quote(channel.other.strip() or DEFAULT_API_VERSION, safe="")
    return f"{channel.base_url}/openai/deployments/{deployment}{route}?api-version={version}"
