"""Where the course downloads from: the Hugging Face hub (or a mirror of it) and ModelScope.

Settings, read when a download starts (so a notebook may set them with ``os.environ`` before the cell runs):

* ``HF_ENDPOINT``  - the Hugging Face hub's address (default https://huggingface.co). A mirror that speaks the
  hub's protocol, such as https://hf-mirror.com, serves the model and FoodieQA where huggingface.co is out of reach;
* ``MODEL_SOURCE`` - ``huggingface`` (the default, through ``HF_ENDPOINT``) or ``modelscope``: where the real
  model comes from;
* ``MODELSCOPE_ENDPOINT`` - ModelScope's address (default https://modelscope.cn), read by ModelScope's own client.

Tokens: ``HF_TOKEN`` or ``huggingface-cli login``, and ``MODELSCOPE_API_TOKEN`` or ``modelscope login``. The
libraries read and send them; the course only says whether one exists, never what it is.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import urlparse

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
HF_MIRROR_EXAMPLE = "https://hf-mirror.com"
MODELSCOPE_DEFAULT_ENDPOINT = "https://modelscope.cn"
MODEL_SOURCES = ("huggingface", "modelscope")
SOURCE_NAMES = {"huggingface": "Hugging Face", "modelscope": "ModelScope"}
HF_TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
MODELSCOPE_TOKEN_VARIABLE = "MODELSCOPE_API_TOKEN"
PROBE_SECONDS = 3.0

_reachable: dict[str, bool] = {}  # endpoint -> answer, asked once per process


def _setting(name: str, environ: Mapping[str, str] | None) -> str:
    return (os.environ if environ is None else environ).get(name, "").strip()


def hf_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """The Hugging Face hub address downloads use: ``HF_ENDPOINT`` or huggingface.co."""
    return (_setting("HF_ENDPOINT", environ) or HF_DEFAULT_ENDPOINT).rstrip("/")


def modelscope_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """ModelScope's address as its client chooses it: ``MODELSCOPE_ENDPOINT``, then the older
    ``MODELSCOPE_DOMAIN``, then modelscope.cn."""
    value = _setting("MODELSCOPE_ENDPOINT", environ) or _setting("MODELSCOPE_DOMAIN", environ)
    value = value or MODELSCOPE_DEFAULT_ENDPOINT
    return (value if value.lower().startswith(("http://", "https://")) else f"https://{value}").rstrip("/")


def model_source(source: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``source``, else ``MODEL_SOURCE``, else ``huggingface``; anything else is a ValueError naming the choices."""
    value = (source if source is not None else _setting("MODEL_SOURCE", environ)).strip().lower() or MODEL_SOURCES[0]
    if value not in MODEL_SOURCES:
        raise ValueError(f"MODEL_SOURCE={value!r} is not a model source: use {' or '.join(MODEL_SOURCES)}")
    return value


def source_endpoint(source: str, environ: Mapping[str, str] | None = None) -> str:
    """The address a model download from ``source`` goes to."""
    return modelscope_endpoint(environ) if source == "modelscope" else hf_endpoint(environ)


def reachable(endpoint: str) -> bool:
    """Whether ``endpoint`` (through a proxy if one is set) accepts a connection; asked once per process and
    endpoint, with one short connection: the hubs' own clients would retry for many seconds, warning each time."""
    if endpoint not in _reachable:
        url = urlparse(endpoint)
        proxy = urllib.request.getproxies().get(url.scheme)
        address = urlparse(proxy) if proxy else url
        port = address.port or (443 if address.scheme == "https" else 80)
        try:
            socket.create_connection((address.hostname, port), timeout=PROBE_SECONDS).close()
            _reachable[endpoint] = True
        except OSError:
            _reachable[endpoint] = False
    return _reachable[endpoint]


def hf_offline() -> bool:
    """Whether huggingface_hub was told to stay offline (``HF_HUB_OFFLINE=1``)."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE


@contextmanager
def hf_downloads_through(endpoint: str) -> Iterator[None]:
    """Make huggingface_hub fetch every byte from ``endpoint`` during the block.

    Files stored with Hugging Face's Xet backend are otherwise fetched from Xet's own servers, whatever
    ``HF_ENDPOINT`` says, and those are out of reach wherever huggingface.co is: through a mirror, the files come
    over plain HTTP from the mirror itself.
    """
    from huggingface_hub import constants

    saved = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = saved or endpoint != HF_DEFAULT_ENDPOINT
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = saved


def hf_token_file() -> Path:
    """Where ``huggingface-cli login`` keeps the token."""
    from huggingface_hub import constants

    return Path(constants.HF_TOKEN_PATH)


def modelscope_token_file(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``modelscope login`` keeps the token (``MODELSCOPE_HOME``, default ``~/.modelscope``)."""
    home = _setting("MODELSCOPE_HOME", environ)
    return (Path(home).expanduser() if home else Path.home() / ".modelscope") / "credentials" / "cookies"


def describe_token(source: str, environ: Mapping[str, str], token_file: Path | None) -> str:
    """Where a token for ``source`` comes from, never the token itself."""
    variables = HF_TOKEN_VARIABLES if source == "huggingface" else (MODELSCOPE_TOKEN_VARIABLE,)
    for variable in variables:
        if environ.get(variable, "").strip():
            return f"found (env {variable})"
    if token_file is not None and token_file.is_file() and token_file.stat().st_size > 0:
        return f"found ({'huggingface-cli' if source == 'huggingface' else 'modelscope'} login)"
    return "not found"


def has_token(source: str) -> bool:
    """Whether the client of ``source`` finds a token (environment or saved login), asked as the client asks."""
    if source == "huggingface":
        from huggingface_hub import get_token

        return get_token() is not None
    from modelscope_hub import HubConfig

    return bool(HubConfig().token)
