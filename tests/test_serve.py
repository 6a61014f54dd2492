"""The HTTP service against a live uvicorn server on 127.0.0.1, with the real ``openai`` client.

Answers are compared with what ``asr-s2s transcribe`` prints for the same file (the command run
in-process), errors with the command's one-line reasons.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import uvicorn
from conftest import fsdd_files, noise, sine, tiny_model, write_audio

from asr_s2s.checkpoint import save_model
from asr_s2s.cli import build_parser, main
from asr_s2s.errors import ConfigError
from asr_s2s.serve import FIELD_BYTES, RESPONSE_FORMATS, Batcher, ServeConfig, create_app
from asr_s2s.transcribe import Transcriber, Transcription, load_model

KEY = "test-key"
LIMIT_MB = 0.25  # uploads over 256 KiB get 413
MAX_QUEUE = 6
MAX_BATCH = 4


class LiveServer:
    """uvicorn serving ``app`` in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Chunks of at most 2 s, so that longer files are chunked, as transcribe does.
    model, config, vocab = tiny_model(decode__max_chunk_seconds=2.0)
    path = tmp_path_factory.mktemp("serve_model") / "model.pt"
    save_model(path, model, config, vocab)
    return path


@pytest.fixture(scope="module")
def transcriber(model_path: Path) -> Transcriber:
    return load_model(model_path, device="cpu")


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def live(transcriber: Transcriber, upload_dir: Path) -> Iterator[LiveServer]:
    config = ServeConfig(
        api_key=KEY,
        max_batch=MAX_BATCH,
        max_wait_ms=100,
        max_queue=MAX_QUEUE,
        max_upload_mb=LIMIT_MB,
        tmp_dir=str(upload_dir),
        model_name="digits-tiny",
    )
    with LiveServer(create_app(transcriber, config)) as server:
        yield server


@pytest.fixture
def server(live: LiveServer, upload_dir: Path) -> Iterator[LiveServer]:
    """The shared server; after each test no upload is left behind and no request is in progress."""
    yield live
    deadline = time.monotonic() + 10
    while (os.listdir(upload_dir) or _health(live)["admitted"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(upload_dir) == []
    assert _health(live)["admitted"] == 0


def _health(server: LiveServer) -> dict:
    return httpx.get(f"{server.base}/health").json()


def _client(server: LiveServer, key: str | None = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key=key or "none", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio")
    sr = 16000
    # Five tones with silences between them: 6 s, chunked into several segments (max 2 s each).
    parts = []
    for i in range(5):
        parts += [
            sine(250 + 120 * i, 0.7, sr, amp=0.4) + noise(0.7, sr, 0.01, seed=i),
            np.zeros(int(0.5 * sr)),
        ]
    files = {
        "short": write_audio(root / "short.wav", sine(300, 0.5) + noise(0.5, amp=0.02)),
        "long": write_audio(root / "long.wav", np.concatenate(parts).astype(np.float32)),
        "stereo_flac": write_audio(
            root / "stereo.flac", np.stack([sine(400, 0.8, 44100), sine(650, 0.8, 44100)], 1), 44100
        ),
        "large": write_audio(root / "large.wav", noise(10.0)),  # 320 KB of PCM-16: over the limit
    }
    (root / "notaudio.wav").write_text("this is not audio\n")
    files["notaudio"] = root / "notaudio.wav"
    (root / "empty.wav").write_bytes(b"")
    files["empty"] = root / "empty.wav"
    files["noframes"] = write_audio(root / "noframes.wav", np.zeros(0, dtype=np.float32))
    files["nan"] = write_audio(root / "nan.wav", np.full(800, np.nan, dtype=np.float32), subtype="FLOAT")
    flac = write_audio(root / "whole.flac", noise(2.0, amp=0.3)).read_bytes()
    (root / "truncated.flac").write_bytes(flac[: len(flac) // 2])
    files["truncated_flac"] = root / "truncated.flac"
    (root / "random.ogg").write_bytes(np.random.default_rng(0).bytes(3000))
    files["random"] = root / "random.ogg"
    return files


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["--quiet", *args])
    out = capsys.readouterr()
    return status, out.out, out.err


def cli_transcribe(model_path: Path, path: Path, fmt: str, capsys, options: list[str] | None = None) -> str:
    args = ["transcribe", "--model", str(model_path), "--device", "cpu", "--format", fmt, *(options or [])]
    status, out, err = cli([*args, str(path)], capsys)
    assert status == 0, err
    return out


# ---- answers equal the command's output ------------------------------------------------------


@pytest.mark.parametrize("name", ["short", "long", "stereo_flac"])
def test_every_format_equals_transcribe(
    server: LiveServer, model_path: Path, audio: dict[str, Path], name: str, capsys
) -> None:
    path = audio[name]
    client = _client(server)

    def ask(fmt: str):
        with open(path, "rb") as f:
            return client.audio.transcriptions.create(model="whatever-1", file=f, response_format=fmt)

    reference = json.loads(cli_transcribe(model_path, path, "json", capsys))
    result = ask("json")
    assert isinstance(result, openai.types.audio.Transcription)
    assert result.text == reference["text"]
    assert result.model == "digits-tiny"  # the served model, whatever the client asked for
    assert result.to_dict()["usage"] == {"type": "duration", "seconds": reference["duration"]}

    assert ask("text") == cli_transcribe(model_path, path, "txt", capsys)
    for fmt in ("srt", "vtt"):
        assert ask(fmt) == cli_transcribe(model_path, path, fmt, capsys)

    verbose = ask("verbose_json")
    assert isinstance(verbose, openai.types.audio.TranscriptionVerbose)
    assert verbose.text == reference["text"] and verbose.duration == reference["duration"]
    assert [(s.start, s.end, s.text) for s in verbose.segments] == [
        (s["start"], s["end"], s["text"]) for s in reference["segments"]
    ]
    assert [s.id for s in verbose.segments] == list(range(len(reference["segments"])))
    if name == "long":
        assert len(reference["segments"]) >= 3  # chunked, as the command chunks it
    assert {"json", "text", "srt", "vtt", "verbose_json"} == set(RESPONSE_FORMATS)


def test_real_fsdd_recording(server: LiveServer, transcriber: Transcriber) -> None:
    path = fsdd_files("3_*_1?.wav")[0]
    with open(path, "rb") as f:
        result = _client(server).audio.transcriptions.create(model="asr-s2s", file=f)
    assert result.text == transcriber.transcribe(path).text


def test_ignored_fields_and_curl_style_request(
    server: LiveServer, audio: dict[str, Path], transcriber
) -> None:
    # language, prompt, temperature and timestamp granularities are accepted and change nothing.
    expected = transcriber.transcribe(audio["short"]).text
    with open(audio["short"], "rb") as f:
        response = httpx.post(
            f"{server.base}/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {KEY}"},
            files={"file": ("clip.wav", f, "audio/wav")},
            data={
                "model": "asr-s2s",
                "language": "en",
                "prompt": "digits",
                "temperature": "0.7",
                "timestamp_granularities[]": "segment",
                "response_format": "verbose_json",
            },
        )
    assert response.status_code == 200
    body = response.json()
    assert body["text"] == expected and body["language"] == "en"
    assert response.headers["openai-model"] == "digits-tiny"


def test_models_and_health(server: LiveServer) -> None:
    client = _client(server)
    assert [m.id for m in client.models.list()] == ["digits-tiny"]
    assert client.models.retrieve("digits-tiny").owned_by == "asr-s2s"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.models.retrieve("gpt-4o")
    health = httpx.get(f"{server.base}/health")  # no key needed
    assert health.status_code == 200 and health.json()["status"] == "ok"


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["notaudio", "empty", "noframes", "nan", "truncated_flac", "random"])
def test_bad_audio_gets_400_with_the_commands_reason(
    server: LiveServer, model_path: Path, audio: dict[str, Path], name: str, capsys
) -> None:
    path = audio[name]
    status, _, err = cli(["transcribe", "--model", str(model_path), "--device", "cpu", str(path)], capsys)
    assert status == 1
    prefix = f"asr-s2s: error: {path}: "
    assert err.startswith(prefix) and err.count("\n") == 1
    reason = err[len(prefix) :].strip()
    with open(path, "rb") as f, pytest.raises(openai.BadRequestError) as caught:
        _client(server).audio.transcriptions.create(model="asr-s2s", file=f)
    assert caught.value.status_code == 400
    assert caught.value.body["message"] == f"{path.name}: {reason}"
    assert caught.value.body["param"] == "file"
    assert "Traceback" not in caught.value.response.text


def _post(server: LiveServer, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}", **kwargs.pop("headers", {})}
    return httpx.post(f"{server.base}/v1/audio/transcriptions", headers=headers, timeout=30, **kwargs)


def test_malformed_requests_get_400(server: LiveServer, audio: dict[str, Path]) -> None:
    wav = audio["short"].read_bytes()
    cases = {
        "no file part": _post(server, data={"model": "asr-s2s"}, files={"other": ("x.txt", b"")}),
        "only fields": _post(server, files={"model": (None, "asr-s2s")}),
        "json body": _post(server, json={"file": "a.wav"}),
        "no body": _post(server),
        "unknown format": _post(server, files={"file": ("a.wav", wav)}, data={"response_format": "xml"}),
        "streaming": _post(server, files={"file": ("a.wav", wav)}, data={"stream": "true"}),
        "two files": _post(server, files=[("file", ("a.wav", wav)), ("file", ("b.wav", wav))]),
        "no closing boundary": _post(
            server,
            content=b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n' + wav,
            headers={"Content-Type": "multipart/form-data; boundary=xx"},
        ),
        "huge field": _post(
            server, files={"file": ("a.wav", wav), "prompt": (None, "x" * (FIELD_BYTES + 1))}
        ),
    }
    for case, response in cases.items():
        assert response.status_code == 400, (case, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"], case
    assert "xml" in cases["unknown format"].json()["error"]["message"]
    assert cases["unknown format"].json()["error"]["param"] == "response_format"
    # Still serving.
    assert _post(server, files={"file": ("a.wav", wav)}).status_code == 200


def test_unknown_routes_and_methods_answer_openai_errors(server: LiveServer) -> None:
    missing = httpx.get(f"{server.base}/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["message"]
    wrong = httpx.get(f"{server.base}/v1/audio/transcriptions")
    assert wrong.status_code == 405 and "error" in wrong.json()


# ---- limits ----------------------------------------------------------------------------------


def test_upload_over_the_limit_gets_413(server: LiveServer, audio: dict[str, Path]) -> None:
    large = audio["large"]
    assert large.stat().st_size > LIMIT_MB * 2**20
    with open(large, "rb") as f, pytest.raises(openai.APIStatusError) as caught:
        _client(server).audio.transcriptions.create(model="asr-s2s", file=f)
    assert caught.value.status_code == 413 and caught.value.body["code"] == "file_too_large"
    # The same bytes streamed without Content-Length: counted as they arrive.
    head = b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'

    def body() -> Iterator[bytes]:
        yield head
        data = large.read_bytes()
        for i in range(0, len(data), 16384):
            yield data[i : i + 16384]
        yield b"\r\n--xx--\r\n"

    streamed = _post(server, content=body(), headers={"Content-Type": "multipart/form-data; boundary=xx"})
    assert streamed.status_code == 413
    # A file just under the limit is accepted.
    under = audio["short"]
    assert under.stat().st_size < LIMIT_MB * 2**20
    assert _post(server, files={"file": ("a.wav", under.read_bytes())}).status_code == 200


def _raw_request(
    server: LiveServer, headers: dict[str, str], body_start: bytes
) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    conn.putrequest("POST", "/v1/audio/transcriptions")
    for name, value in {"Authorization": f"Bearer {KEY}", **headers}.items():
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(body_start)
    return conn


def test_413_comes_before_the_body_is_read(server: LiveServer) -> None:
    # A declared 1 GB body: the answer comes at once, with no byte of the body sent.
    conn = _raw_request(
        server,
        {"Content-Type": "multipart/form-data; boundary=xx", "Content-Length": str(2**30)},
        b"",
    )
    response = conn.getresponse()
    assert response.status == 413 and b"too large" in response.read()
    conn.close()
    # Chunked, with no end in sight: the answer comes once the limit is passed, while the client
    # could go on sending; the server never holds more than the limit.
    conn = _raw_request(
        server, {"Content-Type": "multipart/form-data; boundary=xx", "Transfer-Encoding": "chunked"}, b""
    )
    part = b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    conn.send(b"%x\r\n%s\r\n" % (len(part), part))
    block = b"\0" * 65536
    for _ in range(int(LIMIT_MB * 2**20) // len(block) + 2):
        conn.send(b"%x\r\n%s\r\n" % (len(block), block))
    response = conn.getresponse()
    assert response.status == 413
    conn.close()


def test_client_disconnecting_mid_upload_leaves_nothing(server: LiveServer, upload_dir: Path) -> None:
    part = b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    conn = _raw_request(
        server,
        {"Content-Type": "multipart/form-data; boundary=xx", "Content-Length": "100000"},
        part + b"\0" * 5000,
    )
    deadline = time.monotonic() + 10
    while not os.listdir(upload_dir):  # the part is being written to a temporary file
        assert time.monotonic() < deadline
        time.sleep(0.02)
    conn.close()  # the `server` fixture then checks that the file is gone and the place released


def test_flood_fills_the_queue_then_recovers(
    server: LiveServer, audio: dict[str, Path], upload_dir: Path, transcriber: Transcriber
) -> None:
    wav = audio["short"].read_bytes()
    expected = transcriber.transcribe(audio["short"]).text
    head = b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    tail = b"\r\n--xx--\r\n"
    length = str(len(head) + len(wav) + len(tail))
    # Every place taken by an upload in progress (half of each file sent)...
    holders = [
        _raw_request(
            server,
            {"Content-Type": "multipart/form-data; boundary=xx", "Content-Length": length},
            head + wav[: len(wav) // 2],
        )
        for _ in range(MAX_QUEUE)
    ]
    deadline = time.monotonic() + 10
    while len(os.listdir(upload_dir)) < MAX_QUEUE:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # ... so a flood of concurrent requests is turned away at once.
    client = _client(server)

    def ask() -> str | openai.APIStatusError:
        try:
            return client.audio.transcriptions.create(model="asr-s2s", file=("a.wav", wav)).text
        except openai.APIStatusError as err:
            return err

    with ThreadPoolExecutor(8) as pool:
        refused = list(pool.map(lambda _: ask(), range(16)))
    assert all(isinstance(r, openai.InternalServerError) and r.status_code == 503 for r in refused)
    assert refused[0].response.headers["retry-after"] == "1"
    assert refused[0].body["code"] == "server_busy"
    # The uploads complete and are answered together.
    batches = _health(server)["batches"]
    for conn in holders:
        conn.send(wav[len(wav) // 2 :] + tail)
    for conn in holders:
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["text"] == expected
        conn.close()
    assert _health(server)["batches"] - batches < MAX_QUEUE  # some were decoded in one batch
    # Recovered: a flood larger than the queue now gets 200s (and maybe 503s), then all 200s.
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: ask(), range(24)))
    assert all(
        a == expected or (isinstance(a, openai.APIStatusError) and a.status_code == 503) for a in answers
    )
    assert answers.count(expected) >= MAX_QUEUE
    assert [ask() for _ in range(3)] == [expected] * 3


def test_decoding_failure_is_a_500_without_traceback(
    server: LiveServer, audio: dict[str, Path], transcriber: Transcriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(transcriber, "iter_transcriptions", broken)
    with pytest.raises(openai.InternalServerError) as caught:
        _client(server).audio.transcriptions.create(model="asr-s2s", file=audio["short"].open("rb"))
    assert caught.value.status_code == 500
    assert caught.value.body["message"] == "internal server error"
    assert "Traceback" not in caught.value.response.text and "CUDA" not in caught.value.response.text
    monkeypatch.undo()
    assert _client(server).audio.transcriptions.create(model="asr-s2s", file=audio["short"].open("rb")).text


def test_batcher_batches_and_keeps_a_cancelled_requests_file_until_decoded(tmp_path: Path) -> None:
    release = threading.Event()
    seen: list[list[bool]] = []

    class SlowTranscriber:
        def iter_transcriptions(self, paths, beam_size, batch_size):
            release.wait(10)
            seen.append([p.exists() for p in paths])  # the worker still finds every file
            for p in paths:
                yield Transcription(p.name, [], str(p), 1.0)

    async def scenario() -> list:
        batcher = Batcher(SlowTranscriber(), max_batch=3, max_wait_s=0.2, max_queue=10)
        runner = asyncio.create_task(batcher.run())
        await asyncio.sleep(0)
        paths = [tmp_path / f"{i}.wav" for i in range(4)]
        for p in paths:
            p.write_bytes(b"x")
        tasks = [asyncio.create_task(batcher.transcribe(p)) for p in paths]
        await asyncio.sleep(0.05)
        tasks[0].cancel()  # a request cancelled while its job waits
        await asyncio.sleep(0)
        batcher.discard(paths[0])
        assert paths[0].exists()
        await asyncio.sleep(0.1)
        release.set()
        results = await asyncio.gather(*tasks[1:])
        for p in paths[1:]:
            batcher.discard(p)
        await asyncio.sleep(0.05)
        runner.cancel()
        batcher.close()
        assert not any(p.exists() for p in paths)  # the cancelled one's too, once decoded
        return [batcher.batches, batcher.jobs, [r.text for r in results]]

    assert asyncio.run(scenario()) == [2, 4, ["1.wav", "2.wav", "3.wav"]]
    assert seen == [[True, True, True], [True]]  # up to max_batch files together, then the rest


# ---- auth ------------------------------------------------------------------------------------


def test_api_key_is_required(server: LiveServer, audio: dict[str, Path]) -> None:
    for key in ("wrong", None):
        client = _client(server, key)
        with pytest.raises(openai.AuthenticationError) as caught:
            client.audio.transcriptions.create(model="asr-s2s", file=audio["short"].open("rb"))
        assert caught.value.status_code == 401 and caught.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    no_header = httpx.post(f"{server.base}/v1/audio/transcriptions", files={"file": ("a.wav", b"x")})
    assert no_header.status_code == 401
    basic = httpx.get(f"{server.base}/v1/models", auth=("user", KEY))  # not a bearer token
    assert basic.status_code == 401
    assert _client(server).models.list().data


def test_without_a_key_anyone_may_ask(
    transcriber: Transcriber, audio: dict[str, Path], tmp_path: Path
) -> None:
    with LiveServer(create_app(transcriber, ServeConfig(tmp_dir=str(tmp_path)))) as server:
        text = _client(server, "anything").audio.transcriptions.create(
            model="asr-s2s", file=audio["short"].open("rb"), response_format="text"
        )
    assert text == transcriber.transcribe(audio["short"]).text + "\n"
    assert os.listdir(tmp_path) == []


def test_beam_and_chunk_options_equal_transcribes(
    model_path: Path, audio: dict[str, Path], tmp_path: Path, capsys
) -> None:
    model = load_model(model_path, device="cpu", max_chunk_seconds=1.5)
    options = ["--beam-size", "3", "--max-chunk-seconds", "1.5"]
    expected = cli_transcribe(model_path, audio["long"], "srt", capsys, options)
    with LiveServer(create_app(model, ServeConfig(beam_size=3, tmp_dir=str(tmp_path)))) as server:
        with open(audio["long"], "rb") as f:
            answer = _client(server).audio.transcriptions.create(
                model="asr-s2s", file=f, response_format="srt"
            )
    assert answer == expected and expected.count(" --> ") >= 4


# ---- configuration and the command -----------------------------------------------------------


def test_config_is_checked(transcriber: Transcriber) -> None:
    for bad in (
        ServeConfig(max_batch=0),
        ServeConfig(port=70000),
        ServeConfig(beam_size=0),
        ServeConfig(max_queue=0),
        ServeConfig(max_wait_ms=-1),
        ServeConfig(max_upload_mb=0),
        ServeConfig(api_key=""),
    ):
        with pytest.raises(ConfigError):
            create_app(transcriber, bad)
    args = build_parser().parse_args(["serve", "--model", "m.pt"])
    assert args.host == "127.0.0.1" and args.port == 8000  # loopback unless asked otherwise
    assert (args.max_batch, args.max_wait_ms, args.max_queue, args.max_upload_mb) == (
        ServeConfig.max_batch,
        ServeConfig.max_wait_ms,
        ServeConfig.max_queue,
        ServeConfig.max_upload_mb,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_command(
    model_path: Path, audio: dict[str, Path], transcriber: Transcriber, tmp_path: Path
) -> None:
    port = _free_port()
    env = {**os.environ, "ASR_S2S_API_KEY": "from-env", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    cmd = [
        sys.executable,
        "-m",
        "asr_s2s",
        "serve",
        "--model",
        str(model_path),
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "asr-s2s serve did not start"
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="from-env", max_retries=0)
        with open(audio["short"], "rb") as f:
            assert (
                client.audio.transcriptions.create(model="asr-s2s", file=f).text
                == transcriber.transcribe(audio["short"]).text
            )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="other", max_retries=0).models.list()
        assert list(tmp_path.iterdir())  # its upload folder, while it runs
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    # uvicorn shuts down cleanly, then ends by the signal it caught, as the signal's default would.
    assert proc.returncode == -signal.SIGTERM, output
    assert "Application shutdown complete" in output
    assert f"http://127.0.0.1:{port}" in output
    assert "Traceback" not in output
    assert list(tmp_path.iterdir()) == []  # its upload folder is removed on shutdown


def test_serve_command_bad_options(model_path: Path, tmp_path: Path, capsys) -> None:
    status, _, err = cli(["serve", "--model", str(model_path), "--max-batch", "0"], capsys)
    assert status == 1 and err.strip() == "asr-s2s: error: --max-batch must be at least 1, got 0"
    status, _, err = cli(["serve", "--model", str(tmp_path / "missing.pt")], capsys)
    assert status == 1 and "no such file" in err and err.count("\n") == 1
