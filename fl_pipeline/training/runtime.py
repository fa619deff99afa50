"""The TFF execution context FedKB owns: TFF worker processes and their shutdown.

TFF's default local context starts a C++ `worker_binary` and stops it only in
a `__del__`, so the process often outlives Python. FedKB starts the worker
itself (it is the same binary TFF's remote execution uses), connects TFF's
`RemoteExecutor` to it, and stops it on normal exit, on exceptions, on
SIGINT/SIGTERM and, through the kernel's parent-death signal, even when the
trainer is killed with SIGKILL. The other way round, a local worker that
dies (it has segfaulted) stops the trainer with a `WorkerError` instead of
leaving it waiting forever.

With `workers=["host:port", ...]` nothing is started locally: each round's
clients are split across those workers by TFF's mergeable-computation
context. What crosses the network is the model, client ids and the updates;
each worker reads its clients' text from its own copy of the client store.
A remote worker that stays unreachable for `worker_timeout` seconds stops
the trainer with a `WorkerError` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import portpicker
import tensorflow_federated as tff

from datasets.errors import FedKBError
from datasets.layout import fedkb_command

WORKER_BINARY = Path(tff.__file__).parent / "data" / "worker_binary"
_GRPC_OPTIONS = [("grpc.max_send_message_length", 2_000_000_000),
                 ("grpc.max_receive_message_length", 2_000_000_000)]
_PR_SET_PDEATHSIG = 1


class WorkerError(FedKBError):
    """A TFF worker that could not be started or reached."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def worker_environment() -> dict[str, str]:
    """The worker's environment, with an allocator that keeps its memory flat.

    Under glibc's malloc the worker's resident size kept growing with the
    rounds (+10% from round 50 to 200 on this machine; fragmentation across
    its threads' arenas). jemalloc, when installed (Debian: libjemalloc2),
    held it flat; otherwise two malloc arenas at least halve the growth."""
    env = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
    jemalloc = ctypes.util.find_library("jemalloc")
    if jemalloc and "LD_PRELOAD" not in os.environ:
        env["LD_PRELOAD"] = jemalloc
    return env


def start_worker(port: int, log_path: Path | None = None) -> subprocess.Popen:
    """Starts TFF's C++ worker serving on `port`; it dies when this process dies."""
    if not WORKER_BINARY.is_file():
        raise WorkerError(f"TFF worker binary not found at {WORKER_BINARY}; reinstall with `uv sync`")
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen([str(WORKER_BINARY), f"--port={port}"], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, env=worker_environment(),
                                preexec_fn=_die_with_parent)
    finally:
        if log_path:
            log.close()


def stop_worker(process: subprocess.Popen, timeout: float = 5.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _compile(comp):
    """TFF's native compilation, after replacing secure-sum intrinsics with
    their plain-TensorFlow equivalents: TFF's simulation runtime reproduces
    secure aggregation's numerics (bounds, clipping, integer sums), not its
    cryptography, exactly as TFF's own test contexts do."""
    comp = tff.backends.test.replace_secure_intrinsics_with_bodies(comp)
    return tff.backends.native.desugar_and_transform_to_native(comp)


def remote_context(address: str, timeout: float = 30.0, channel: grpc.Channel | None = None
                   ) -> tff.framework.AsyncExecutionContext:
    """An async TFF context executing on the worker at `address` (host:port)."""
    channel = channel or grpc.insecure_channel(address, _GRPC_OPTIONS)
    stub = tff.framework.RemoteExecutorGrpcStub(channel)
    deadline = time.monotonic() + timeout
    while not stub.is_ready:
        if time.monotonic() > deadline:
            raise WorkerError(f"no TFF worker answers at {address}; start one there with "
                              f"`{fedkb_command('worker', '--port', address.rsplit(':', 1)[-1])}`")
        time.sleep(0.2)

    def executor_for(cardinalities):
        # Computations without client-placed arguments (e.g. `initialize`)
        # carry no client count; TFF's own local factory uses 0 for them.
        cardinalities.setdefault(tff.CLIENTS, 0)
        executor = tff.framework.RemoteExecutor(stub)
        executor.set_cardinalities(cardinalities)
        return executor

    return tff.framework.AsyncExecutionContext(
        executor_fn=tff.framework.ResourceManagingExecutorFactory(executor_for),
        compiler_fn=_compile,
        transform_args=tff.tensorflow.transform_args,
        transform_result=tff.tensorflow.transform_result,
    )


class SplitAcrossWorkers(tff.framework.AsyncContext):
    """Runs each computation split over several workers (TFF's mergeable form),
    behind the async interface `tff.program.NativeFederatedContext` expects."""

    def __init__(self, contexts: Sequence[tff.framework.AsyncExecutionContext]):
        self._context = tff.backends.native.create_mergeable_comp_execution_context(contexts)

    async def invoke(self, comp, arg):
        return await asyncio.to_thread(self._context.invoke, comp, arg)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class _WorkerWatch:
    """Notices when a worker is lost, and makes the trainer notice too.

    TFF retries a computation whose worker is unavailable, forever (with
    back-off): a worker that crashed (one segfaulted in its gRPC server on
    this machine) or a remote machine that went away would leave the trainer
    waiting. A thread watches the local worker processes, and the gRPC
    connection to each remote worker once it has been up; when a process
    exits, or a remote worker stays unreachable for `remote_timeout`
    seconds (a network may blip), it closes the gRPC channels, so the next
    attempt fails at once (a closed channel is not a retryable error) and
    `federated_context` reports a `WorkerError` instead."""

    def __init__(self, processes: Sequence[subprocess.Popen], channels: dict[str, grpc.Channel],
                 log_path: Path | None, remote_timeout: float):
        self._processes = processes
        self._channels = channels
        self._log_path = log_path
        self._remote_timeout = remote_timeout
        self._down_since: dict[str, float | None] = {}  # remote workers seen up: since when down
        self._subscriptions = [] if processes else [
            (channel, functools.partial(self._on_connectivity, address))
            for address, channel in channels.items()]
        for channel, callback in self._subscriptions:
            channel.subscribe(callback, try_to_connect=True)
        self._stop = threading.Event()
        self.lost: str | None = None  # why, once a worker is lost
        self._thread = threading.Thread(target=self._watch, name="tff-worker-watch", daemon=True)
        self._thread.start()

    def _on_connectivity(self, address: str, state: grpc.ChannelConnectivity) -> None:
        if state == grpc.ChannelConnectivity.READY:
            self._down_since[address] = None
        elif (state != grpc.ChannelConnectivity.IDLE and address in self._down_since
              and self._down_since[address] is None):  # it was up and is now going down
            self._down_since[address] = time.monotonic()

    def _lost_worker(self) -> str | None:
        for process in self._processes:
            code = process.poll()
            if code is not None:
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                where = f"; its log: {self._log_path}" if self._log_path else ""
                return f"the TFF worker (pid {process.pid}) stopped unexpectedly ({how}){where}"
        for address, since in list(self._down_since.items()):
            if since is not None and time.monotonic() - since > self._remote_timeout:
                return (f"the TFF worker at {address} has been unreachable for "
                        f"{self._remote_timeout:g} s; restart it there "
                        f"(`{fedkb_command('worker', '--port', address.rsplit(':', 1)[-1])}`)")
        return None

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.lost = self._lost_worker()
            if self.lost:
                for channel in self._channels.values():
                    channel.close()
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for channel, callback in self._subscriptions:
            channel.unsubscribe(callback)


class _QuietOrphanedCalls(logging.Filter):
    """Once a worker is lost, drops asyncio's "Task exception was never
    retrieved" for the calls TFF left running on the other workers (its
    mergeable context gives up on them when one fails): the `WorkerError`
    already says what happened, in one line."""

    def __init__(self, watch: _WorkerWatch):
        super().__init__()
        self._watch = watch

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self._watch.lost and record.getMessage().startswith(
            "Task exception was never retrieved"))


@contextlib.contextmanager
def federated_context(workers: Sequence[str] = (), log_path: Path | None = None,
                      worker_timeout: float = 30.0) -> Iterator[tff.program.NativeFederatedContext]:
    """The context a training or evaluation program runs in; local workers stop on exit.

    A lost worker (a local one exits, a remote one is unreachable for
    `worker_timeout` seconds) ends the program with a `WorkerError`."""
    processes: list[subprocess.Popen] = []
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    watch = None
    try:
        addresses = list(workers)
        if not addresses:
            port = portpicker.pick_unused_port()
            processes.append(start_worker(port, log_path))
            addresses = [f"localhost:{port}"]
        channels = {address: grpc.insecure_channel(address, _GRPC_OPTIONS) for address in addresses}
        watch = _WorkerWatch(processes, channels, log_path, worker_timeout)
        quiet = _QuietOrphanedCalls(watch)
        logging.getLogger("asyncio").addFilter(quiet)
        contexts = [remote_context(a, channel=c) for a, c in channels.items()]
        context = contexts[0] if len(contexts) == 1 else SplitAcrossWorkers(contexts)
        program_context = tff.program.NativeFederatedContext(context)
        with tff.framework.get_context_stack().install(program_context):
            try:
                yield program_context
            except BaseException:
                if watch.lost:
                    raise WorkerError(watch.lost) from None  # whatever failed first, this is why
                raise
    finally:
        if watch is not None:
            watch.stop()  # before stopping the workers on purpose
            if not watch.lost:  # else the orphaned calls may be collected after the context
                logging.getLogger("asyncio").removeFilter(quiet)
        for process in processes:
            stop_worker(process)
        signal.signal(signal.SIGTERM, previous_sigterm)


def serve_forever(port: int) -> int:
    """`fedkb worker`: run a worker in the foreground until interrupted."""
    process = start_worker(port)
    print(f"TFF worker serving on port {port} (Ctrl-C to stop)", flush=True)
    try:
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_worker(process)


def release_tff_default_context() -> None:
    """Drops the local context TFF installs at import while Python is still whole.

    Left to interpreter shutdown, its `__del__` runs after `subprocess` is torn
    down and prints a traceback to stderr on every exit.
    """
    # TFF's private path, the one FedKB imports: 0.87 exports no public way to reset the
    # default context (docs/DESIGN.md).
    from tensorflow_federated.python.core.impl.context_stack import runtime_error_context

    tff.framework.get_context_stack().set_default_context(
        runtime_error_context.RuntimeErrorContext())
