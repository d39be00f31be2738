"""The client side of OpenAI-compatible serving, with the ``openai`` package: the same calls work against
LMDeploy's ``api_server`` and the course's own server. Images travel inside the request as base64 data URLs.
"""

from __future__ import annotations

import base64
import io
from typing import Iterator

from .interface import open_image


def image_data_url(image, image_format: str = "JPEG") -> str:
    """An image (path or PIL) as a ``data:image/...;base64,...`` URL."""
    buffer = io.BytesIO()
    open_image(image).save(buffer, format=image_format)
    return f"data:image/{image_format.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def user_message(image, question: str, max_dynamic_patch: int | None = None) -> dict:
    """One user message in OpenAI's format: the question, and the image when there is one. LMDeploy's server and
    the course's read ``max_dynamic_patch`` (tiles for this image) next to the url."""
    if image is None:
        return {"role": "user", "content": question}
    image_url = {"url": image_data_url(image)}
    if max_dynamic_patch is not None:
        image_url["max_dynamic_patch"] = max_dynamic_patch
    return {"role": "user", "content": [{"type": "text", "text": question},
                                        {"type": "image_url", "image_url": image_url}]}


def ask(client, model: str, image, question: str, max_tokens: int = 64, temperature: float = 0.0) -> str:
    """One question about one image; the whole answer."""
    response = client.chat.completions.create(model=model, messages=[user_message(image, question)],
                                              max_tokens=max_tokens, temperature=temperature)
    return response.choices[0].message.content


def ask_stream(client, model: str, image, question: str, max_tokens: int = 64,
               temperature: float = 0.0) -> Iterator[str]:
    """The same question with ``stream=True``: the answer's pieces as the server sends them."""
    stream = client.chat.completions.create(model=model, messages=[user_message(image, question)],
                                            max_tokens=max_tokens, temperature=temperature, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content
