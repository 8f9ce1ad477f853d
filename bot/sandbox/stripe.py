"""Run localstripe (a fake Stripe API server) in a subprocess for tests and local runs.

    with LocalStripe() as ls:                      # or: async with LocalStripe() as ls
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": ls.api_base}, ...)

localstripe is started through a tiny launcher (``python -c``) instead of its console
script, for three reasons found in localstripe 1.15:

* ``localstripe --port N`` listens on ``::`` (every interface); the launcher binds
  127.0.0.1 only.
* It pickles its whole store to the fixed path ``/tmp/localstripe.pickle`` after every
  write and reloads it at start-up, so parallel runs on one machine would share and
  clobber state. The launcher keeps the store in memory.
* The launcher binds port 0 itself and reports the port it got, so there is no race
  between picking a free port and localstripe binding it.

Any ``sk_...`` key is accepted. Quirks worth knowing when writing tests against it:
charges need a ``pm_``/``card_``/``src_`` source (create a PaymentMethod from a raw test
card number; ``tok_visa``/``pm_card_visa`` do not exist), refunds ignore idempotency keys,
never refuse an already refunded charge, reject ``reason``, and a missing object is a
404 without Stripe's ``resource_missing`` code.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import IO, Final

__all__ = ["LocalStripe", "LocalStripeError"]

TEST_API_KEY: Final = "sk_test_webinarpass"

_LAUNCHER: Final = r"""
import os, signal, socket, sys

# Die with the parent (Linux) so a crashed test run leaves no server behind.
try:
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)

from aiohttp import web
from localstripe import resources
from localstripe.server import app

# localstripe writes its store to /tmp/localstripe.pickle after every write: keep this
# instance's state private and in memory.
resources.store.dump_to_disk = lambda: None

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
web.run_app(app, sock=sock, print=None, access_log=None)
"""


class LocalStripeError(RuntimeError):
    """localstripe could not be started."""


class LocalStripe:
    """A localstripe server on 127.0.0.1 with a free port, as a subprocess.

    :meth:`start` blocks until the server answers HTTP (about a second); :meth:`stop`
    terminates it. Usable as a sync or async context manager. ``api_base`` is what
    ``stripe.StripeClient(base_addresses={"api": ...})`` or ``StripeRefunder(api_base=)``
    needs.
    """

    def __init__(self, *, python: str | None = None, startup_timeout: float = 30.0) -> None:
        self._python = python or sys.executable
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LocalStripe is not started")
        return self._port

    @property
    def api_base(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``: the SDK adds it)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the server, while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        """Launch localstripe and wait until it answers; return :attr:`api_base`."""
        if not self.running:
            self._spawn()
            self._wait_ready()
        return self.api_base

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s). Idempotent."""
        proc, self._proc = self._proc, None
        self._port = None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def flush(self) -> None:
        """Delete every object in localstripe's store (``DELETE /_config/data``)."""
        request = urllib.request.Request(f"{self.api_base}/_config/data", method="DELETE")
        with urllib.request.urlopen(request, timeout=5):
            pass

    def __enter__(self) -> LocalStripe:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> LocalStripe:
        if not self.running:
            # Spawn from the loop's thread: the child's parent-death signal is tied to the
            # thread that forked it, and executor threads come and go.
            self._spawn()
            await asyncio.to_thread(self._wait_ready)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- internals -------------------------------------------------------------------------

    def _spawn(self) -> None:
        if self._python == sys.executable and importlib.util.find_spec("localstripe") is None:
            raise LocalStripeError("localstripe is not installed (it is in the 'test' extra)")
        # stderr goes to a file, not a pipe nobody reads, so a chatty server cannot block.
        self._log = tempfile.TemporaryFile(  # noqa: SIM115 - lives as long as the server
            mode="w+", prefix="localstripe-", suffix=".log"
        )
        self._proc = subprocess.Popen(
            [self._python, "-c", _LAUNCHER, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        try:
            self._port = self._read_port(deadline)
            self._wait_http(deadline)
        except BaseException:
            self.stop()
            raise

    def _failure(self, what: str) -> LocalStripeError:
        output = ""
        if self._log is not None:
            self._log.seek(0)
            output = self._log.read()[-2000:]
        return LocalStripeError(f"{what}\n--- localstripe stderr ---\n{output}".rstrip())

    def _read_port(self, deadline: float) -> int:
        assert self._proc is not None
        assert self._proc.stdout is not None
        stdout = self._proc.stdout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._failure("localstripe did not report its port in time")
            ready, _, _ = select.select([stdout], [], [], min(remaining, 0.2))
            if ready:
                line = stdout.readline()
                if line.strip().isdigit():
                    return int(line)
                if not line:  # EOF: the launcher exited
                    self._proc.wait(timeout=5)
                    raise self._failure(
                        f"localstripe exited with code {self._proc.returncode} at start-up"
                    )
            elif self._proc.poll() is not None:
                raise self._failure(f"localstripe exited with code {self._proc.returncode}")

    def _wait_http(self, deadline: float) -> None:
        request = urllib.request.Request(
            f"{self.api_base}/v1/customers?limit=1",
            headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        )
        while True:
            try:
                with urllib.request.urlopen(request, timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # any HTTP answer means the server is up
            except OSError:
                pass
            if self._proc is None or self._proc.poll() is not None:
                raise self._failure("localstripe exited before answering HTTP")
            if time.monotonic() > deadline:
                raise self._failure("localstripe did not answer HTTP in time")
            time.sleep(0.05)

    def __del__(self) -> None:
        # Last resort if a caller forgot stop(): do not leave a server running.
        with contextlib.suppress(Exception):
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
