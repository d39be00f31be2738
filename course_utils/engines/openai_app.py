"""OpenAI's chat-completions protocol over the course's engine, with FastAPI: what LMDeploy's ``api_server``
offers on a GPU, served anywhere (``/health``, ``/v1/models``, ``/v1/chat/completions`` with base64 image data
URLs, plain or streamed), so that the same client code talks to either.

Run as a server (``serving.serve_openai`` starts it for you):

    python -m course_utils.engines.openai_app MODEL_DIR --server-name 127.0.0.1 --server-port 23333

How it holds under many or hostile clients, as LMDeploy's and vLLM's servers do:

* one engine loop (a thread) generates one answer at a time; requests wait for it in a bounded queue, and one that
  finds the queue full gets a 429 with ``Retry-After`` at once, one that waits too long a 503: none hangs;
* no lock is held while an answer is sent, and a client that disconnects (or leaves a stream) cancels its answer
  at the next decoding step;
* ``/health`` and ``/v1/models`` are answered on the event loop, never behind a generation;
* limits are checked before any generation: request bytes, image pixels, prompt tokens + ``max_tokens`` against
  the session length (a missing ``max_tokens`` becomes one that fits);
* every error, 404 and 405 included, is OpenAI's ``{"error": {"message", "type", "param", "code"}}``, never a
  500 for a bad request; a parameter this server does not implement is refused by name, never ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import io
import json
import math
import queue
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from ..chat import GenerationCancelled
from .interface import GenerationSettings
from .serving import check_bind, usable_api_keys

# LMDeploy's api_server defaults, so that a request means the same on both servers
DEFAULT_TEMPERATURE, DEFAULT_TOP_P, DEFAULT_TOP_K = 0.7, 1.0, 40
DEFAULT_MAX_TOKENS = GenerationSettings.max_new_tokens  # cut further when the session has less room left
MAX_REQUEST_BYTES = 20 * 2**20  # OpenAI's own limit for one image
MAX_IMAGE_PIXELS = 50_000_000  # a 48-megapixel photo fits; a decompression bomb's 10^8 pixels do not
MAX_TILES_PER_IMAGE = 40  # the most tiles any InternVL2 configuration asks for
MAX_STOP_STRINGS = 4  # as OpenAI
MAX_WAITING_REQUESTS = 64  # waiting behind the answer being generated; more get a 429
MAX_WAIT_SECONDS = 300.0  # the longest a request waits for the engine before a 503


class RequestError(ValueError):
    """A request the server cannot answer; becomes an OpenAI-style error response."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request", param: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.param, self.kind, self.headers = status, code, param, kind, headers

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(str(self), self.code, self.param, self.kind), self.status, self.headers)


def error_body(message: str, code: str, param: str | None = None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def unicode_text(text: str) -> str:
    """``text`` if it can be encoded (JSON's ``\\ud800`` escape gives a lone surrogate, which cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"holds {text[error.start:error.end]!r}, a lone surrogate: not text") from error
    return text


Text = Annotated[str, AfterValidator(unicode_text)]
StopText = Annotated[Text, Field(min_length=1)]


class Strict(BaseModel):
    """Exact JSON types (``"yes"`` or ``1`` is not ``true``) and no field this server does not read."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ImageURL(Strict):
    url: Text
    max_dynamic_patch: int | None = Field(default=None, ge=1, le=MAX_TILES_PER_IMAGE)  # LMDeploy's, per image


class ContentPart(Strict):
    type: Literal["text", "image_url"]
    text: Text | None = None
    image_url: ImageURL | None = None


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: Text | list[ContentPart]


class StreamOptions(Strict):
    include_usage: bool = False


class ChatCompletionRequest(Strict):
    model: Text
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=DEFAULT_TEMPERATURE, ge=0.0, le=2.0)
    top_p: float = Field(default=DEFAULT_TOP_P, gt=0.0, le=1.0)
    top_k: int = Field(default=DEFAULT_TOP_K, ge=0)
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    seed: int | None = None
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP_STRINGS)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)


def image_bytes(url: str) -> bytes:
    """The image file inside a ``data:image/...;base64,...`` URL, checked to be an image of at most
    :data:`MAX_IMAGE_PIXELS` from its header alone: nothing is decoded yet. RequestError for anything else."""
    from PIL import Image, UnidentifiedImageError

    if not url.startswith("data:image/") or ";base64," not in url:
        raise RequestError("image_url must be a base64 data URL (data:image/jpeg;base64,...): this server does not "
                           "fetch images from the network", param="messages")
    try:
        data = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as error:
        raise RequestError(f"image_url holds a decompression bomb: {error}", param="messages") from error
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError) as error:
        raise RequestError(f"image_url does not hold a readable image: {error}", param="messages") from error
    if width * height > MAX_IMAGE_PIXELS:
        raise RequestError(f"the image is {width}x{height} = {width * height:,} pixels; this server reads images of "
                           f"at most {MAX_IMAGE_PIXELS:,} pixels: send a smaller image (the model sees it as "
                           "448-pixel tiles anyway)", param="messages")
    return data


def decode_image(data: bytes):
    """An image file checked by :func:`image_bytes` as an RGB PIL image."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (ValueError, OSError) as error:  # a truncated file passes the header check
        raise RequestError(f"image_url does not hold a readable image: {error}", param="messages") from error


def decode_data_url(url: str):
    """A ``data:image/...;base64,...`` URL as a PIL image, as the server reads it; RequestError for anything else."""
    return decode_image(image_bytes(url))


def message_text_and_image(message: Message) -> tuple[str, ImageURL | None]:
    """A message's text, and its image if it has one (one image per message)."""
    if isinstance(message.content, str):
        return message.content, None
    texts = [part.text or "" for part in message.content if part.type == "text"]
    images = [part.image_url for part in message.content if part.type == "image_url" and part.image_url]
    if len(images) > 1:
        raise RequestError("this server reads one image per conversation", param="messages")
    return "\n".join(texts), (images[0] if images else None)


def to_conversation(messages: list[Message]):
    """OpenAI messages -> (image, question, history) for the engine; the image (an :class:`ImageURL`) is checked
    but not decoded, and its turn keeps ``<image>``."""
    if any(message.role == "system" for message in messages):
        raise RequestError("system messages are not supported: the model answers with its own system prompt "
                           "(the model card's)", param="messages")
    if messages[-1].role != "user":
        raise RequestError("the last message must be the user's question", param="messages")
    turns = [message_text_and_image(message) for message in messages]
    images = [image for _, image in turns if image]
    if len(images) > 1:
        raise RequestError("this server reads one image per conversation", param="messages")
    history, pending = [], None
    for message, (text, image) in zip(messages[:-1], turns[:-1]):
        text = f"<image>\n{text}" if image else text
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
    question, image = turns[-1]
    if image:
        question = f"<image>\n{question}"
    return (images[0] if images else None), question, history


def fitting_max_tokens(prompt_tokens: int, asked: int | None, context_length: int) -> int:
    """The answer's token budget: ``asked`` if the prompt and it fit in ``context_length``, the default cut to the
    room left when nothing was asked; RequestError when the prompt alone, or with ``asked``, does not fit."""
    room = context_length - prompt_tokens
    if room < 1:
        raise RequestError(f"the prompt is {prompt_tokens} tokens (image tokens included) but the session length "
                           f"is {context_length}: shorten the conversation, or send a smaller image",
                           code="context_length_exceeded", param="messages")
    if asked is None:
        return min(DEFAULT_MAX_TOKENS, room)
    if asked > room:
        raise RequestError(f"max_tokens is {asked} but the prompt is {prompt_tokens} tokens (image tokens included) "
                           f"and the session length is {context_length}: at most {room} fit",
                           code="context_length_exceeded", param="max_tokens")
    return asked


def server_error(error: Exception) -> RequestError:
    return RequestError(f"the generation failed: {type(error).__name__}: {error}", 500, "server_error",
                        kind="server_error")


class StopStrings:
    """The answer's text as it streams, cut before the first of ``stops``; the last characters are held back
    while they could still be the start of one."""

    def __init__(self, stops: list[str]):
        self.stops, self.pending = stops, ""
        self.held = max(map(len, stops), default=1) - 1

    def feed(self, piece: str) -> tuple[str, bool]:
        """The text that can be sent now, and whether a stop string was found (the answer ends there)."""
        self.pending += piece
        found = [self.pending.index(stop) for stop in self.stops if stop in self.pending]
        if found:
            text, self.pending = self.pending[:min(found)], ""
            return text, True
        cut = max(len(self.pending) - self.held, 0)
        text, self.pending = self.pending[:cut], self.pending[cut:]
        return text, False

    def rest(self) -> str:
        text, self.pending = self.pending, ""
        return text


class Generation:
    """One request on its way through the engine loop. The loop thread hands its events to the request's event
    loop: ("accepted", prompt_tokens), then ("text", piece)... and ("done", finish_reason, completion_tokens), or
    ("error", RequestError); the request's own task adds ("disconnected",) when its client goes away."""

    def __init__(self, image: ImageURL | None, question: str, history: list, request: ChatCompletionRequest):
        self.image = image_bytes(image.url) if image else None
        self.max_dynamic_patch = image.max_dynamic_patch if image else None
        self.question, self.history = question, history
        self.asked_tokens = request.max_completion_tokens or request.max_tokens
        self.settings = GenerationSettings(temperature=request.temperature, top_p=request.top_p,
                                           top_k=request.top_k, repetition_penalty=request.repetition_penalty,
                                           seed=request.seed)
        self.stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        self.streamed = request.stream
        self.events: asyncio.Queue = asyncio.Queue()
        self.event_loop = asyncio.get_running_loop()
        self.cancelled = threading.Event()
        self.streamer = None

    def send(self, *event) -> None:
        """Hand an event to the request (from the engine loop's thread)."""
        try:
            self.event_loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the server is shutting down
            pass

    def cancel(self) -> None:
        """Stop the answer at its next decoding step, or skip it if it is still waiting (from any thread)."""
        self.cancelled.set()
        if self.streamer is not None:
            self.streamer.cancel()

    def run(self, engine) -> None:
        """Check the prompt against the session length, then generate (in the engine loop's thread)."""
        try:
            image = decode_image(self.image) if self.image else None
            turn = engine.turn(image, self.question, self.history, max_dynamic_patch=self.max_dynamic_patch)
            prompt_tokens = engine.prompt_tokens(turn)
            max_tokens = fitting_max_tokens(prompt_tokens, self.asked_tokens, engine.context_length)
        except ValueError as error:  # RequestError, or the engine's own checks of the client's input
            self.send("error", error if isinstance(error, RequestError) else RequestError(str(error)))
            return
        except Exception as error:  # a bug or a broken model, not the client's fault; the loop goes on
            self.send("error", server_error(error))
            return
        # text as it is written is needed only to stream it or to look for stop strings
        self.streamer = engine.answer_streamer(text=self.streamed or bool(self.stops))
        if self.cancelled.is_set():  # cancelled before the streamer existed
            self.streamer.cancel()
        self.send("accepted", prompt_tokens)
        try:
            stopped = self.generate(engine, turn, replace(self.settings, max_new_tokens=max_tokens))
        except GenerationCancelled:  # the client left: nobody waits for the rest
            return
        except Exception as error:
            self.send("error", server_error(error))
            return
        cut = not stopped and not self.streamer.ended and self.streamer.new_tokens >= max_tokens
        self.send("done", "length" if cut else "stop", self.streamer.new_tokens)

    def generate(self, engine, turn, settings: GenerationSettings) -> bool:
        """Send the answer's text, and say whether a stop string ended it."""
        if self.streamer.text is None:
            self.send("text", engine.answer_turn(turn, settings, self.streamer).text)
            return False
        pieces = engine.stream_turn(turn, settings, self.history, self.streamer)
        stops = StopStrings(self.stops)
        try:
            for piece in pieces:
                text, stopped = stops.feed(piece)
                if text:
                    self.send("text", text)
                if stopped:
                    return True
            if rest := stops.rest():
                self.send("text", rest)
            return False
        finally:
            pieces.close()  # after a stop string the generation stops at its next step


class EngineLoop:
    """The one thread that runs the engine, and the bounded queue of requests waiting for it: the model is never
    shared between threads, and no lock is held while an answer travels to its client."""

    def __init__(self, engine, max_waiting: int):
        self.engine = engine
        self.waiting: queue.Queue[Generation] = queue.Queue(maxsize=max_waiting)
        self.seconds_per_request = 1.0  # a running average, for Retry-After
        threading.Thread(target=self.run, name="engine-loop", daemon=True).start()

    def retry_after(self) -> dict[str, str]:
        seconds = math.ceil(self.seconds_per_request * (self.waiting.qsize() + 1))
        return {"Retry-After": str(max(seconds, 1))}

    def submit(self, generation: Generation) -> None:
        try:
            self.waiting.put_nowait(generation)
        except queue.Full:
            raise RequestError(f"the server is busy: {self.waiting.maxsize} requests are already waiting for the "
                               "model; retry after the seconds in Retry-After", 429, "rate_limit_exceeded",
                               kind="rate_limit_error", headers=self.retry_after()) from None

    def run(self) -> None:
        while True:
            generation = self.waiting.get()
            if generation.cancelled.is_set():  # its client left, or gave up waiting
                continue
            start = time.monotonic()
            generation.run(self.engine)
            self.seconds_per_request = 0.8 * self.seconds_per_request + 0.2 * (time.monotonic() - start)


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets a 400 before the app reads any of it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self.refuse(int(declared), scope, receive, send)
        chunks, size, more = [], 0, True
        while more:  # the body is read here, at most max_bytes of it, then handed to the app
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self.refuse(size, scope, receive, send)
        body_sent = False

        async def replay():
            nonlocal body_sent
            if body_sent:
                return await receive()
            body_sent = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def refuse(self, size: int, scope, receive, send):
        error = RequestError(f"the request is {size:,} bytes or more; this server reads at most {self.max_bytes:,} "
                             "bytes per request: send a smaller image")
        await error.response()(scope, receive, send)


def create_app(engine, model_name: str, api_keys: list[str] | str | None = None, *,
               max_waiting: int = MAX_WAITING_REQUESTS, max_wait_seconds: float = MAX_WAIT_SECONDS):
    """The FastAPI app serving ``engine`` under ``model_name``; ``api_keys``: bearer tokens it accepts (None: any).
    ``max_waiting`` requests may wait for the engine, each at most ``max_wait_seconds``."""
    # no API docs: /docs, /redoc and /openapi.json would answer anyone, key or not
    app = FastAPI(title="InternVL2 course OpenAI-compatible server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_REQUEST_BYTES)
    api_keys = [key.encode() for key in usable_api_keys(api_keys) or []]
    engine_loop = EngineLoop(engine, max_waiting)

    @app.exception_handler(RequestError)
    async def request_error(_, error: RequestError):
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_, error: RequestValidationError):
        def where(problem) -> str:  # the field's path, without pydantic's names for the members of a union
            return ".".join(str(part) for part in problem.get("loc", ())
                            if part != "body" and not (isinstance(part, str) and ("[" in part or part == "str")))

        unknown = [where(problem) for problem in error.errors() if problem["type"] == "extra_forbidden"]
        if unknown:
            read = ", ".join(ChatCompletionRequest.model_fields)
            return RequestError(f"{', '.join(unknown)}: not implemented by this server, so refused rather than "
                                f"ignored (it reads {read}; an image_url reads url and max_dynamic_patch)",
                                code="unsupported_parameter", param=unknown[0]).response()
        first = error.errors()[0]
        message = f"{where(first)}: {first.get('msg')}" if where(first) else str(first.get("msg"))
        return RequestError(message, param=where(first) or None).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        message = str(error.detail)
        if error.status_code in (404, 405):
            message = (f"{request.method} {request.url.path}: {message.lower()} (this server answers GET /health, "
                       "GET /v1/models and POST /v1/chat/completions)")
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "invalid_request")
        return RequestError(message, error.status_code, code, headers=error.headers).response()

    async def check_key(request: Request):
        if not api_keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip().encode()
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(token, key) for key in api_keys):
            raise RequestError("a valid API key is required (Authorization: Bearer ...)", 401, "invalid_api_key")

    # every handler is async: it runs on the event loop and never waits for a worker thread
    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "course"}]}

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        if body.model != model_name:
            raise RequestError(f"the model {body.model!r} does not exist: this server serves {model_name!r}",
                               404, "model_not_found", "model")
        if body.stream_options is not None and not body.stream:
            raise RequestError("stream_options is only allowed with stream: true", param="stream_options")
        generation = Generation(*to_conversation(body.messages), body)
        engine_loop.submit(generation)
        watcher = asyncio.create_task(cancel_on_disconnect(request, generation))
        try:
            event = await asyncio.wait_for(generation.events.get(), max_wait_seconds)
        except TimeoutError:
            generation.cancel()
            watcher.cancel()
            raise RequestError(f"the server is busy: this request waited {max_wait_seconds:.0f} s for the model "
                               "without being started; retry after the seconds in Retry-After", 503,
                               "server_overloaded", kind="server_error", headers=engine_loop.retry_after()) from None
        completion = dict(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model_name)
        if event[0] != "accepted":
            watcher.cancel()
            return event[1].response() if event[0] == "error" else None
        prompt_tokens = event[1]
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(stream_events(generation, watcher, completion, prompt_tokens, include_usage),
                                     media_type="text/event-stream")
        pieces = []
        try:
            while (event := await generation.events.get())[0] == "text":
                pieces.append(event[1])
        finally:
            generation.cancel()  # a no-op once done; stops the answer if this task is cancelled
            watcher.cancel()
        if event[0] != "done":
            return event[1].response() if event[0] == "error" else None
        _, finish, completion_tokens = event
        return {**completion, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces).strip()},
                             "finish_reason": finish, "logprobs": None}],
                "usage": usage(prompt_tokens, completion_tokens)}

    return app


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


async def cancel_on_disconnect(request: Request, generation: Generation) -> None:
    """Cancel ``generation`` when its client goes away (vLLM's ``listen_for_disconnect``): the request's body is
    read, so the next message the server receives for it is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    generation.cancel()
    generation.events.put_nowait(("disconnected",))


async def stream_events(generation: Generation, watcher: asyncio.Task, completion: dict, prompt_tokens: int,
                        include_usage: bool):
    """Server-sent events of ``chat.completion.chunk`` objects, one per piece of text, then ``[DONE]``; a client
    that stops reading cancels the generation (this generator is closed, or its task cancelled)."""

    def event(choices: list, **extra) -> str:
        chunk = {**completion, "object": "chat.completion.chunk", "choices": choices, **extra}
        if include_usage:
            chunk.setdefault("usage", None)
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    def choice(delta: dict, finish: str | None = None) -> list:
        return [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]

    try:
        yield event(choice({"role": "assistant", "content": ""}))
        while (message := await generation.events.get())[0] == "text":
            yield event(choice({"content": message[1]}))
        if message[0] == "error":
            yield f"data: {json.dumps(error_body(str(message[1]), message[1].code, kind=message[1].kind))}\n\n"
        elif message[0] == "done":
            _, finish, completion_tokens = message
            yield event(choice({}, finish))
            if include_usage:
                yield event([], usage=usage(prompt_tokens, completion_tokens))
            yield "data: [DONE]\n\n"
    finally:
        generation.cancel()
        watcher.cancel()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags mirror ``lmdeploy serve api_server``'s, so both servers start the same way; the binding rule is
    ``serve_openai``'s (anything but loopback needs API keys)."""
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
    parser.add_argument("--max-waiting-requests", type=int, default=MAX_WAITING_REQUESTS,
                        help="requests that may wait for the model; more get a 429 (default: %(default)s)")
    parser.add_argument("--max-wait-seconds", type=float, default=MAX_WAIT_SECONDS,
                        help="the longest a request waits for the model before a 503 (default: %(default)s)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    args.api_keys = usable_api_keys(args.api_keys)
    try:
        check_bind(args.server_name, args.api_keys)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from .loader import load_engine

    args = parse_args(argv)
    engine = load_engine(args.model_path, backend="transformers", dtype=args.dtype,
                         max_dynamic_patch=args.max_dynamic_patch, session_len=args.session_len,
                         max_batch_size=args.max_batch_size)
    app = create_app(engine, args.model_name or Path(args.model_path).name, args.api_keys,
                     max_waiting=args.max_waiting_requests, max_wait_seconds=args.max_wait_seconds)
    uvicorn.run(app, host=args.server_name, port=args.server_port, log_level=args.log_level.lower())
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
