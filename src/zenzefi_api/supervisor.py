"""The supervisor of `zenzefi serve --workers N`: N uvicorn processes, one port, each with a
listening socket of its own.

Why not uvicorn's own supervisor: it binds one socket and hands the same one to every process,
and each process then accepts every connection waiting on it at once (asyncio takes up to the
backlog per wake-up). Keep-alive clients that connect together (a load balancer's pool, a
benchmark's connections) all land on the process that woke first, and the other processes sit
idle: with two processes and 64 connections, one process served all 64 while the other did
nothing, and the queue behind the busy one stretched the slowest requests to seconds. Here each
process listens on its own socket bound with `SO_REUSEPORT`, and the kernel spreads new
connections over them evenly (by a hash of the client's address and port).

Signals: SIGHUP replaces the processes one by one, each new one serving before the old one is
told to stop; SIGTERM and SIGINT tell every process to stop, and each finishes its running
requests first (uvicorn's graceful shutdown). A process that dies is replaced; one that fails
before it starts serving stops the supervisor (it would fail the same way again).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from types import FrameType

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Process

logger = logging.getLogger("zenzefi.serve")

#: How often the supervisor checks its processes and its signals, in seconds.
TICK_SECONDS = 0.5
#: How long a new process may take to start serving (imports, the app's startup) before a
#: SIGHUP restart gives up on it; generous, since a busy machine is slow to start Python.
STARTUP_TIMEOUT_SECONDS = 120.0


def reuse_port_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket on host:port that other processes of this user may bind as well."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Supervisor:
    """Runs `count` server processes of `config` until SIGTERM or SIGINT."""

    def __init__(self, config: Config, count: int) -> None:
        self.config = config
        self.count = count
        self.processes: list[Process] = []
        #: The processes that have answered as serving once; only those can hang.
        self._serving: set[int | None] = set()
        self._signals: list[int] = []
        self._wake = threading.Event()
        self._stopping = False

    def _start_one(self) -> Process:
        sock = reuse_port_socket(self.config.host, self.config.port, self.config.backlog)
        try:
            process = Process(self.config, [sock])
            process.start()
        finally:
            # The child has its own copy now. Ours must go: a socket still open here would stay
            # in the port's group after the child died, and the kernel would keep handing it
            # connections that nobody accepts.
            sock.close()
        return process

    def _on_signal(self, number: int, _frame: FrameType | None) -> None:
        self._signals.append(number)
        self._wake.set()

    def run(self) -> int:
        """Serve until told to stop; 0, or 1 when a process could not start."""
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {number: signal.signal(number, self._on_signal) for number in handled}
        status = 0
        try:
            logger.info("supervisor %d starting %d API processes", os.getpid(), self.count)
            self.processes = [self._start_one() for _ in range(self.count)]
            while not self._stopping:
                self._wake.wait(TICK_SECONDS)
                self._wake.clear()
                self._handle_signals()
                if not self._stopping and not self._keep_alive():
                    status = 1
                    self._stopping = True
        finally:
            for process in self.processes:
                process.terminate()
            for process in self.processes:
                process.join()
            for number, handler in previous.items():
                signal.signal(number, handler)
        logger.info("supervisor %d stopped", os.getpid())
        return status

    def _handle_signals(self) -> None:
        while self._signals:
            number = self._signals.pop(0)
            if number == signal.SIGHUP:
                logger.info("SIGHUP: replacing the API processes one by one")
                self._restart_all()
            else:
                logger.info("%s: stopping the API processes", signal.Signals(number).name)
                self._stopping = True
                return

    def _restart_all(self) -> None:
        for index, old in enumerate(self.processes):
            new = self._start_one()
            if not new.wait_until_ready(STARTUP_TIMEOUT_SECONDS):
                new.kill()
                new.join()
                logger.error(
                    "the new API process %s did not start serving in time; keeping %s and "
                    "the rest as they are",
                    new.pid,
                    old.pid,
                )
                return
            self._serving.add(new.pid)
            old.terminate()
            old.join()
            self._serving.discard(old.pid)
            self.processes[index] = new

    def _keep_alive(self) -> bool:
        """Replace dead or hung processes; False if one failed before it started serving.

        A process still starting is only checked for having exited: it answers the health
        check only once its interpreter is up, which on a busy machine takes seconds."""
        for index, process in enumerate(self.processes):
            if process.process.is_alive():
                if process.pid not in self._serving:
                    if process.is_ready(timeout=0.05):
                        self._serving.add(process.pid)
                    continue
                if process.ping(timeout=self.config.timeout_worker_healthcheck):
                    continue
                logger.warning("API process %s does not answer; replacing it", process.pid)
            process.kill()
            process.join()
            self._serving.discard(process.pid)
            if process.exitcode == STARTUP_FAILURE:
                logger.error("API process %s failed to start; stopping", process.pid)
                return False
            logger.warning("API process %s ended; starting another", process.pid)
            self.processes[index] = self._start_one()
        return True
