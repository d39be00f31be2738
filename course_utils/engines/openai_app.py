"""OpenAI's chat-completions protocol over the course's engine, with FastAPI: what LMDeploy's ``api_server``
offers on a GPU, served anywhere (``/health``, ``/v1/models``, ``/v1/chat/completions`` with base64 image data
URLs, plain or streamed), so that the same client code talks to either.

Run as a server (``serving.serve_openai`` starts it for you):

    python -m course_utils.engines.openai_app MODEL_DIR --server-name 127.0.0.1 --server-port 23333

Images take the engine's tile limit (LMDeploy's per-image ``max_dynamic_patch`` is ignored here). Malformed
requests get OpenAI-style JSON errors (``{"error": {"message", "type", "param", "code"}}``), never a 500.
"""

import argparse
import base64
import binascii
import io
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from .interface import GenerationSettings

# LMDeploy's api_server defaults, so that a request means the same on both servers
DEFAULT_TEMPERATURE, DEFAULT_TOP_P, DEFAULT_TOP_K = 0.7, 1.0, 40


class RequestError(ValueError):
    """A request the server cannot answer; becomes an OpenAI-style error response."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request", param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


class ImageURL(BaseModel):
    url: str


class ContentPart(BaseModel):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


class ChatCompletionRequest(BaseModel):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=DEFAULT_TEMPERATURE, ge=0.0, le=2.0)
    top_p: float = Field(default=DEFAULT_TOP_P, gt=0.0, le=1.0)
    top_k: int = Field(default=DEFAULT_TOP_K, ge=0)
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    seed: int | None = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)


def error_body(message: str, code: str, param: str | None = None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def decode_data_url(url: str):
    """A ``data:image/...;base64,...`` URL as a PIL image; RequestError for anything else."""
    from PIL import Image, UnidentifiedImageError

    if not url.startswith("data:image/") or ";base64," not in url:
        raise RequestError("image_url must be a base64 data URL (data:image/jpeg;base64,...): this server does not "
                           "fetch images from the network", param="messages")
    try:
        data = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError) as error:
        raise RequestError(f"image_url does not hold a readable image: {error}", param="messages") from error


def message_text_and_image(message: Message) -> tuple[str, str | None]:
    """A message's text, and its image's data URL if it has one (one image per message)."""
    if isinstance(message.content, str):
        return message.content, None
    texts = [part.text or "" for part in message.content if part.type == "text"]
    images = [part.image_url.url for part in message.content if part.type == "image_url" and part.image_url]
    if len(images) > 1:
        raise RequestError("this server reads one image per conversation", param="messages")
    return "\n".join(texts), (images[0] if images else None)


def to_conversation(messages: list[Message]):
    """OpenAI messages -> (image, question, history) for ``engine.chat``; the image's turn keeps ``<image>``."""
    if any(message.role == "system" for message in messages):
        raise RequestError("system messages are not supported: the model answers with its own system prompt "
                           "(the model card's)", param="messages")
    if messages[-1].role != "user":
        raise RequestError("the last message must be the user's question", param="messages")
    turns = [message_text_and_image(message) for message in messages]
    image_urls = [url for _, url in turns if url]
    if len(image_urls) > 1:
        raise RequestError("this server reads one image per conversation", param="messages")
    history, pending = [], None
    for message, (text, url) in zip(messages[:-1], turns[:-1]):
        text = f"<image>\n{text}" if url else text
        if message.role == "user":
            if pending is not None:
                raise RequestError("user and assistant messages must alternate", param="messages")
            pending = text
        else:
            if pending is None:
                raise RequestError("an assistant message must follow a user message", param="messages")
            history.append((pending, text))
            pending = None
    if pending is not None:
        raise RequestError("user and assistant messages must alternate", param="messages")
    question, url = turns[-1]
    if url:
        question = f"<image>\n{question}"
    image = decode_data_url(image_urls[0]) if image_urls else None
    return image, question, history


def generation_settings(request: ChatCompletionRequest) -> GenerationSettings:
    max_tokens = request.max_completion_tokens or request.max_tokens or GenerationSettings.max_new_tokens
    return GenerationSettings(max_new_tokens=max_tokens, temperature=request.temperature, top_p=request.top_p,
                              top_k=request.top_k, repetition_penalty=request.repetition_penalty, seed=request.seed)


def create_app(engine, model_name: str, api_keys: list[str] | None = None):
    """The FastAPI app serving ``engine`` under ``model_name``; ``api_keys``: bearer tokens it accepts (None: any)."""
    app = FastAPI(title="InternVL2 course OpenAI-compatible server")
    lock = threading.Lock()  # one generation at a time: the model is not shared between threads

    @app.exception_handler(RequestError)
    async def request_error(_, error: RequestError):
        return JSONResponse(error_body(str(error), error.code, error.param), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_, error: RequestValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        return JSONResponse(error_body(message, "invalid_request", where or None), status_code=400)

    def check_key(request: Request):
        if not api_keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token not in api_keys:
            raise RequestError("a valid API key is required (Authorization: Bearer ...)", 401, "invalid_api_key")

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "course"}]}

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    def chat_completions(request: ChatCompletionRequest):
        if request.model != model_name:
            raise RequestError(f"the model {request.model!r} does not exist: this server serves {model_name!r}",
                               404, "model_not_found", "model")
        image, question, history = to_conversation(request.messages)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        try:  # the engine's own checks (an unreadable image, a prompt longer than session_len) are the client's
            settings = generation_settings(request)
            with lock:
                if request.stream:
                    pieces = engine.stream(image, question, settings, history=history)
                else:
                    answer, _ = engine.chat(image, question, history, settings)
        except ValueError as error:
            raise RequestError(str(error)) from error
        if request.stream:
            return StreamingResponse(stream_events(pieces, lock, completion_id, created, model_name),
                                     media_type="text/event-stream")
        finish = "length" if answer.output_tokens >= settings.max_new_tokens else "stop"
        return {
            "id": completion_id, "object": "chat.completion", "created": created, "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": finish, "logprobs": None}],
        }

    return app


def stream_events(pieces, lock, completion_id, created, model_name):
    """Server-sent events of ``chat.completion.chunk`` objects, one per piece of text, then ``[DONE]``."""

    def event(delta: dict, finish: str | None) -> str:
        chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    with lock:
        yield event({"role": "assistant", "content": ""}, None)
        for piece in pieces:
            yield event({"content": piece}, None)
    yield event({}, "stop")
    yield "data: [DONE]\n\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags mirror ``lmdeploy serve api_server``'s, so both servers start the same way."""
    parser = argparse.ArgumentParser(prog="python -m course_utils.engines.openai_app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_path")
    parser.add_argument("--server-name", default="127.0.0.1")
    parser.add_argument("--server-port", type=int, default=23333)
    parser.add_argument("--model-name", default=None, help="the name in /v1/models (default: the folder's name)")
    parser.add_argument("--api-keys", nargs="*", default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-dynamic-patch", type=int, default=None)
    parser.add_argument("--session-len", type=int, default=None)
    parser.add_argument("--max-batch-size", type=int, default=None)
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from .loader import load_engine

    args = parse_args(argv)
    engine = load_engine(args.model_path, backend="transformers", dtype=args.dtype,
                         max_dynamic_patch=args.max_dynamic_patch, session_len=args.session_len,
                         max_batch_size=args.max_batch_size)
    app = create_app(engine, args.model_name or Path(args.model_path).name, args.api_keys)
    uvicorn.run(app, host=args.server_name, port=args.server_port, log_level=args.log_level.lower())
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
