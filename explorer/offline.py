"""Working without the Hub: when it cannot be reached, say so once and switch the Hugging Face
libraries to offline mode.

Offline, huggingface_hub retries each request for about 23 s before giving up, and only then
falls back to its local cache. `use_cache_if_offline()` checks once per process whether the
Hub's host answers; when it does not, cached models and datasets load at once and missing ones
fail at once with explorer's one-line error.
"""

from __future__ import annotations

import functools
import os
import socket
import warnings
from urllib.parse import urlparse

TRUE = ("1", "ON", "YES", "TRUE")
PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


@functools.cache
def use_cache_if_offline(timeout: float = 3.0) -> bool:
    """True when the Hub is out of reach (or HF_HUB_OFFLINE is set): the libraries then read
    only their local cache. Called before anything is asked of the Hub."""
    import datasets.config
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in TRUE:
        return True
    if any(os.environ.get(name) for name in PROXIES):
        return False  # a direct connection may fail where the proxy gets through
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return False
    except OSError as error:
        warnings.warn(
            f"{host} cannot be reached ({error.strerror or error}): working offline, "
            "from the local Hugging Face cache",
            stacklevel=2,
        )
    # Both libraries read these flags at call time (transformers through huggingface_hub's).
    constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    return True
