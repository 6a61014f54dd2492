"""A transcription service with OpenAI's HTTP API: ``asr-s2s serve``.

>>> app = create_app(load_model("exp/digits/model.pt"), ServeConfig(api_key="secret"))
>>> uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints (FastAPI on uvicorn):

* ``POST /v1/audio/transcriptions``: multipart ``file`` (any audio soundfile decodes), ``model``
  (any name is accepted; the answer names the served model), ``response_format`` (``json``,
  ``text``, ``srt``, ``vtt``, ``verbose_json``); ``language``, ``prompt``, ``temperature`` and
  ``timestamp_granularities[]`` are accepted and ignored (the model has one language and no prompt,
  and decodes deterministically with its own search settings).
* ``GET /v1/models``, ``GET /v1/models/{id}``: the one served model.
* ``GET /health``: liveness and queue figures, without the API key.

Uploads stream into a temporary file (never whole into memory) and are counted as they arrive:
over ``max_upload_mb`` the answer is 413. Admitted requests (uploading, waiting or being decoded)
are bounded by ``max_queue``; beyond it the answer is 503 with ``Retry-After``. Waiting requests
are decoded together by :class:`Batcher`, in one worker thread, through
:meth:`Transcriber.iter_transcriptions`, the path ``asr-s2s transcribe`` takes, so the answer for a
file equals the command's. Errors are OpenAI-shaped JSON (``{"error": {"message", "type", "param",
"code"}}``), never a traceback, and the server goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from asr_s2s.errors import AsrError, ConfigError
from asr_s2s.transcribe import Transcriber, Transcription
from asr_s2s.writers import format_result, format_srt, format_vtt

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
API_KEY_ENV = "ASR_S2S_API_KEY"
# Room for the form's other fields and the multipart framing, on top of the file's own limit.
FIELD_BYTES = 64 * 1024
# How long a client told 503 should wait before trying again (seconds).
RETRY_AFTER_S = 1


@dataclass
class ServeConfig:
    """Settings of the service (not stored in models: they belong to a deployment)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # None: no key asked
    max_batch: int = 16  # utterances (files or chunks of long files) decoded together
    max_wait_ms: float = 10.0  # how long the first waiting request waits for others to join it
    max_queue: int = 64  # requests admitted at once (uploading, waiting or being decoded)
    max_upload_mb: float = 25.0  # OpenAI's own limit
    model_name: str = "asr-s2s"  # the id /v1/models lists and answers report
    beam_size: int | None = None  # None: the model's decode.beam_size, as transcribe's default
    tmp_dir: str | None = None  # where uploads are written (default: a new folder in the system's)

    def check(self) -> None:
        """Raise :class:`ConfigError` for a value that cannot work."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be within 0..65535, got {self.port}")
        if self.max_batch < 1:
            raise ConfigError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"--max-wait-ms must not be negative, got {self.max_wait_ms}")
        if self.max_queue < 1:
            raise ConfigError(f"--max-queue must be at least 1, got {self.max_queue}")
        if self.max_upload_mb <= 0:
            raise ConfigError(f"--max-upload-mb must be positive, got {self.max_upload_mb}")
        if self.beam_size is not None and self.beam_size < 1:
            raise ConfigError(f"--beam-size must be at least 1, got {self.beam_size}")
        if self.api_key == "":
            raise ConfigError("the API key is empty; give a non-empty key or none")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class ApiError(Exception):
    """An answer other than 200, with OpenAI's error type and the parameter at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"file too large: the limit is {limit / 1024 / 1024:g} MB",
        param="file",
        code="file_too_large",
    )


# ---- uploads ---------------------------------------------------------------------------------


@dataclass
class Upload:
    """A received form: the ``file`` part written to ``path`` (None when absent) and the other fields."""

    path: Path | None = None
    filename: str = "file"
    fields: dict[str, str] = field(default_factory=dict)


class _FormReader:
    """python-multipart callbacks: the ``file`` part goes to a temporary file as it arrives, the
    other parts (small text fields) to memory; raises :class:`ApiError` past the limits."""

    def __init__(self, folder: Path, max_file_bytes: int) -> None:
        self.folder, self.max_file_bytes = folder, max_file_bytes
        self.upload = Upload()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._name = ""
        self._value = bytearray()
        self._field_bytes = 0
        self._file: Any = None  # the open temporary file while the file part arrives
        self._file_bytes = 0

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_name.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._disposition, self._name, self._value = b"", "", bytearray()

    def _header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            return
        if self._name != "file" or self.upload.path is not None:
            raise ApiError(400, f"unexpected file part {self._name!r}: send one audio file as 'file'")
        self.upload.filename = Path(options[b"filename"].decode("utf-8", "replace")).name or "file"
        # The suffix helps soundfile recognize formats that lack a header signature.
        suffix = Path(self.upload.filename).suffix
        suffix = suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix) else ""
        handle, name = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=self.folder)
        self.upload.path = Path(name)
        self._file = os.fdopen(handle, "wb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file_bytes += end - start
            if self._file_bytes > self.max_file_bytes:
                raise _too_large(self.max_file_bytes)
            self._file.write(data[start:end])
            return
        self._field_bytes += end - start
        if self._field_bytes > FIELD_BYTES:
            raise ApiError(400, f"form fields too long: the limit is {FIELD_BYTES // 1024} KB in all")
        self._value.extend(data[start:end])

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._name:
            self.upload.fields[self._name] = self._value.decode("utf-8", "replace")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def receive_upload(request: Request, folder: Path, max_file_bytes: int) -> Upload:
    """Stream a ``multipart/form-data`` body: the ``file`` part into a new file in ``folder``.

    Raises :class:`ApiError`: 413 as soon as the declared ``Content-Length`` or the bytes received
    pass ``max_file_bytes`` (plus :data:`FIELD_BYTES` for the rest of the form), without reading
    further; 400 for a body that is not a well-formed multipart form. The file written so far is
    removed on any failure (a client that disconnects included); on success the caller removes it.
    """
    kind, params = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(400, "expected a multipart/form-data body with the audio as 'file'")
    limit = max_file_bytes + FIELD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(max_file_bytes)
    reader = _FormReader(folder, max_file_bytes)
    parser = MultipartParser(params[b"boundary"], reader.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:  # a body sent without Content-Length, or longer than it said
                raise _too_large(max_file_bytes)
            parser.write(chunk)
        parser.finalize()
        if parser.state != MultipartState.END:
            raise ApiError(400, "incomplete multipart body (the closing boundary is missing)")
    except FormParserError as err:
        _discard(reader)
        raise ApiError(400, f"malformed multipart body ({err})") from None
    except BaseException:
        _discard(reader)
        raise
    return reader.upload


def _discard(reader: _FormReader) -> None:
    reader.close()
    if reader.upload.path is not None:
        reader.upload.path.unlink(missing_ok=True)


# ---- batching --------------------------------------------------------------------------------


@dataclass
class _Job:
    path: Path
    future: asyncio.Future[Transcription | AsrError]
    arrived: float


class Batcher:
    """Decodes the files of concurrent requests together, in one worker thread.

    A batch starts with the oldest waiting job and takes up to ``max_batch`` jobs, waiting at most
    ``max_wait_s`` after the first one's arrival for others; jobs that queued while the previous
    batch ran go at once. Each batch is one :meth:`Transcriber.iter_transcriptions` call (chunks of
    long files decoded ``max_batch`` at a time), so the event loop keeps serving meanwhile.
    """

    def __init__(
        self,
        transcriber: Transcriber,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        beam_size: int | None = None,
    ) -> None:
        self.transcriber, self.beam_size = transcriber, beam_size
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.admitted = 0  # requests holding a place (uploading, waiting or being decoded)
        self.batches = 0
        self.jobs = 0
        self._queue: asyncio.Queue[_Job] | None = None
        self._pending: dict[Path, asyncio.Future[Transcription | AsrError]] = {}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="asr-s2s-model")

    def admit(self) -> bool:
        """Take a place for a request; False when all ``max_queue`` are taken."""
        if self.admitted >= self.max_queue:
            return False
        self.admitted += 1
        return True

    def release(self) -> None:
        self.admitted -= 1

    async def transcribe(self, path: Path) -> Transcription | AsrError:
        """The transcription of a file, or the :class:`AsrError` that made it fail."""
        assert self._queue is not None, "Batcher.run is not running"
        loop = asyncio.get_running_loop()
        job = _Job(path, loop.create_future(), loop.time())
        self._pending[path] = job.future
        self._queue.put_nowait(job)
        # Shielded: the job goes on when the request is cancelled; see :meth:`discard`.
        return await asyncio.shield(job.future)

    def discard(self, path: Path) -> None:
        """Remove an upload: now, or once its job is decoded if it is still queued or decoding
        (a request cancelled meanwhile), so that the worker never loses a file it reads."""
        future = self._pending.pop(path, None)
        if future is None or future.done():
            path.unlink(missing_ok=True)
        else:
            future.add_done_callback(lambda _: path.unlink(missing_ok=True))

    async def run(self) -> None:
        """Form and decode batches until cancelled."""
        self._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = batch[0].arrived + self.max_wait_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                    break
            self.batches += 1
            self.jobs += len(batch)
            log.debug("decoding a batch of %d file(s)", len(batch))
            await loop.run_in_executor(self._executor, self._decode, batch, loop)

    def _decode(self, batch: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        # In the worker thread: results go back to the event loop as each file completes.
        done = 0
        try:
            results = self.transcriber.iter_transcriptions(
                [job.path for job in batch], beam_size=self.beam_size, batch_size=self.max_batch
            )
            for job, result in zip(batch, results):
                loop.call_soon_threadsafe(_settle, job.future, result, None)
                done += 1
        except Exception as err:  # a bug or an exhausted device: the batch fails, the server goes on
            log.exception("decoding a batch of %d file(s) failed", len(batch))
            for job in batch[done:]:
                loop.call_soon_threadsafe(_settle, job.future, None, err)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _settle(
    future: asyncio.Future[Transcription | AsrError],
    result: Transcription | AsrError | None,
    error: BaseException | None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


# ---- answers ---------------------------------------------------------------------------------


def _usage(result: Transcription) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(result.duration, 3)}


def _compression_ratio(text: str) -> float:
    # As whisper computes it: high for repetitive text, a sign of a decoder stuck in a loop.
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def verbose_json(
    result: Transcription, transcriber: Transcriber, language: str, model: str
) -> dict[str, Any]:
    """OpenAI's ``TranscriptionVerbose``: duration and segment times rounded as ``transcribe
    --format json`` writes them. ``tokens`` are the segment's character ids; ``avg_logprob`` and
    ``no_speech_prob`` are not computed (0.0); ``temperature`` is 0 (deterministic search)."""
    plain = result.to_dict()
    segments = [
        {
            "id": i,
            "seek": round(s["start"] * 100),
            "start": s["start"],
            "end": s["end"],
            "text": s["text"],
            "tokens": transcriber.vocab.encode(s["text"]),
            "temperature": 0.0,
            "avg_logprob": 0.0,
            "compression_ratio": _compression_ratio(s["text"]),
            "no_speech_prob": 0.0,
        }
        for i, s in enumerate(plain["segments"])
    ]
    return {
        "task": "transcribe",
        "language": language,
        "duration": plain["duration"],
        "text": plain["text"],
        "segments": segments,
        "usage": _usage(result),
        "model": model,
    }


def format_answer(
    result: Transcription, response_format: str, transcriber: Transcriber, language: str, model: str
) -> Response:
    """The HTTP answer for one transcription in one of :data:`RESPONSE_FORMATS`."""
    headers = {"openai-model": model}
    if response_format == "json":
        return JSONResponse({"text": result.text, "usage": _usage(result), "model": model}, headers=headers)
    if response_format == "verbose_json":
        return JSONResponse(verbose_json(result, transcriber, language, model), headers=headers)
    if response_format == "text":
        body = format_result(result, "txt")
    elif response_format == "srt":
        body = format_srt(result)
    else:
        body = format_vtt(result)
    return PlainTextResponse(body, headers=headers)


# ---- the application -------------------------------------------------------------------------


def create_app(transcriber: Transcriber, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI application serving ``transcriber`` with ``config``'s limits."""
    config = config or ServeConfig()
    config.check()
    batcher = Batcher(
        transcriber, config.max_batch, config.max_wait_ms / 1000.0, config.max_queue, config.beam_size
    )
    created = int(time.time())
    if transcriber.model_path is not None and Path(transcriber.model_path).exists():
        created = int(Path(transcriber.model_path).stat().st_mtime)
    model_card = {"id": config.model_name, "object": "model", "created": created, "owned_by": "asr-s2s"}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_dir = config.tmp_dir is None
        folder = Path(tempfile.mkdtemp(prefix="asr-s2s-serve-")) if own_dir else Path(config.tmp_dir)
        folder.mkdir(parents=True, exist_ok=True)
        app.state.upload_dir = folder
        task = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            batcher.close()
            if own_dir:
                shutil.rmtree(folder, ignore_errors=True)

    app = FastAPI(title="asr-s2s", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.state.config = config

    def check_key(request: Request) -> None:
        if config.api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            given.strip().encode(), config.api_key.encode()
        ):
            raise ApiError(
                401, "missing or incorrect API key (send 'Authorization: Bearer KEY')", code="invalid_api_key"
            )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return ApiError(err.status_code, str(err.detail), headers=err.headers).response()

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> JSONResponse:
        # The client gets one line; Starlette re-raises the error, so uvicorn logs its traceback.
        return ApiError(500, "internal server error", kind="server_error").response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": config.model_name,
            "admitted": batcher.admitted,
            "max_queue": config.max_queue,
            "max_batch": config.max_batch,
            "batches": batcher.batches,
            "requests_decoded": batcher.jobs,
        }

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request) -> dict[str, Any]:
        check_key(request)
        if model_id != config.model_name:
            raise ApiError(
                404,
                f"the model {model_id!r} does not exist (this server has {config.model_name!r})",
                param="model",
                code="model_not_found",
            )
        return model_card

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        check_key(request)
        if not batcher.admit():
            raise ApiError(
                503,
                f"the server is busy ({config.max_queue} requests in progress); retry later",
                kind="server_error",
                code="server_busy",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        try:
            try:
                upload = await receive_upload(request, app.state.upload_dir, config.max_upload_bytes)
            except ClientDisconnect:
                log.info("client disconnected during the upload")
                return Response(status_code=400)
            try:
                return await _answer(upload)
            finally:
                if upload.path is not None:
                    batcher.discard(upload.path)
        finally:
            batcher.release()

    async def _answer(upload: Upload) -> Response:
        fields = upload.fields
        response_format = fields.get("response_format", "json") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise ApiError(
                400,
                f"unknown response_format {response_format!r} "
                f"(expected one of {', '.join(RESPONSE_FORMATS)})",
                param="response_format",
            )
        if fields.get("stream", "false").lower() == "true":
            raise ApiError(400, "streaming is not supported", param="stream")
        if upload.path is None:
            raise ApiError(400, "missing the audio file: send it as the multipart part 'file'", param="file")
        result = await batcher.transcribe(upload.path)
        if isinstance(result, AsrError):
            # The command's one-line reason, with the client's file name for the temporary path.
            raise ApiError(400, str(result).replace(str(upload.path), upload.filename), param="file")
        language = fields.get("language") or "unknown"
        return format_answer(result, response_format, transcriber, language, config.model_name)

    return app


def serve(transcriber: Transcriber, config: ServeConfig, log_level: str = "info") -> None:
    """Run the service with uvicorn until interrupted (Ctrl-C or SIGTERM); ``log_level`` is
    uvicorn's (``info`` logs every request)."""
    import uvicorn

    config.check()
    if config.api_key is None and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without an API key: anyone who can reach it can use it", config.host)
    app = create_app(transcriber, config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, timeout_graceful_shutdown=5)
