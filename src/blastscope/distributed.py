"""Where whole-slide tiles and batch slides run: in this process, on a ``LocalCluster`` of this
machine, or on a running dask scheduler (a cluster made with dask-jobqueue, Kubernetes, ...).

The driver (the process that runs ``blastscope run`` or ``batch``) sends tasks and writes every
file; workers only read the input and compute, so they need the slide files at the same paths
(a shared file system on a cluster). Each worker process loads each model once
(:func:`worker_config`: the bundles are cached per worker, by weights hash) and analyses one task
at a time with ``threads`` torch threads; a GPU on a worker is used (device ``auto``).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from blastscope.errors import BlastscopeError

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
"""The environment variable dask itself reads for a scheduler's address."""
WORKER_MEMORY_BYTES = 2_500_000_000
"""Memory a default worker is given room for: one tile of the default side with its halo, the
models and Python (at most about 1.3 GB measured with 2,048-pixel tiles in
benchmarks/bench_wholeslide.py, with margin)."""
CONNECT_TIMEOUT_S = 10
MALLOC_ARENAS = 2
"""glibc malloc arenas a process that analyses tiles keeps (see :func:`limit_malloc_arenas`)."""
M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number for the most arenas."""


class ClusterError(BlastscopeError):
    """A cluster could not be started or reached."""


@dataclass(frozen=True)
class ClusterSettings:
    """How to run: ``workers`` processes (None: :func:`default_workers`; 0: in this process,
    no cluster), ``threads`` torch threads per worker (None: the cores shared out), or the
    running scheduler at ``scheduler`` (``tcp://HOST:PORT``; default the
    ``DASK_SCHEDULER_ADDRESS`` environment variable), whose own workers are used."""

    workers: int | None = None
    threads: int | None = None
    scheduler: str | None = None

    def address(self) -> str | None:
        """The scheduler to connect to, if any (the option, else the environment)."""
        return self.scheduler or os.environ.get(SCHEDULER_ENV) or None

    def in_process(self) -> bool:
        """True when the work runs in this process (``workers`` 0 and no scheduler)."""
        return self.workers == 0 and self.address() is None


def available_cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(threads: int = 1) -> int:
    """Workers for a ``LocalCluster``: one per ``threads`` cores, as many as memory allows
    (:data:`WORKER_MEMORY_BYTES` each), at least one."""
    import psutil

    by_cores = available_cores() // max(1, threads)
    by_memory = int(psutil.virtual_memory().available // WORKER_MEMORY_BYTES)
    return max(1, min(by_cores, by_memory))


@dataclass(frozen=True)
class Cluster:
    """A connected dask client and the torch threads each task uses (None: the worker's)."""

    client: Any
    threads: int | None

    def slots(self) -> int:
        """Tasks kept in flight: one running and one waiting per worker thread."""
        threads = sum(self.client.nthreads().values())
        return max(2, 2 * threads)


@contextmanager
def cluster(settings: ClusterSettings) -> Iterator[Cluster | None]:
    """The :class:`Cluster` that ``settings`` ask for, closed on exit (a ``LocalCluster`` is
    shut down; a running scheduler is only disconnected from); None to run in this process."""
    if settings.in_process():
        use_threads(settings.threads)
        yield None
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - a dependency, but a broken install says how
        raise ClusterError(
            "dask.distributed is not installed: pip install 'dask[distributed]', or run in this "
            "process with --workers 0."
        ) from None
    address = settings.address()
    if address is not None:
        try:
            client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as error:
            raise ClusterError(
                f"Could not reach a dask scheduler at {address} ({error}). Start one (`dask "
                f"scheduler`, then `dask worker {address}` on each machine), or unset "
                f"--scheduler and {SCHEDULER_ENV} to run on this machine."
            ) from None
        try:
            yield Cluster(client, settings.threads)
        finally:
            client.close()
        return
    threads = settings.threads or 1
    workers = settings.workers or default_workers(threads)
    local = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,  # one task at a time per worker: memory holds one tile each
        processes=True,
        dashboard_address=None,
        # no dashboard, and the scheduler's health routes on a free port: a second run at once
        # would otherwise warn on the terminal that port 8787 is taken
        scheduler_kwargs={"dashboard_address": ":0"},
        silence_logs=logging.ERROR,
        env={"MALLOC_ARENA_MAX": str(MALLOC_ARENAS)},  # each worker, as in this process
    )
    client = Client(local)
    try:
        yield Cluster(client, threads)
    finally:
        client.close()
        local.close()


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> None:
    """Let glibc keep at most ``count`` malloc arenas in this process (elsewhere nothing is
    done). Each thread that allocates (zarr's chunk writers, torch's, Cellpose's mask thread)
    otherwise gets an arena of its own that keeps what it freed: writing a slide's labels grew
    the driver by 0.14 GB over 9 tiles, flat with two arenas (docs/benchmarks.md). glibc fixes
    the limit when a second thread first allocates, so this must run before any thread starts:
    the CLI calls it first thing, LocalCluster workers get ``MALLOC_ARENA_MAX`` instead."""
    if (libc := _glibc()) is not None:
        libc.mallopt(M_ARENA_MAX, count)


def release_freed_memory() -> None:
    """Hand memory freed by a finished tile back to the system (glibc's ``malloc_trim``), so
    that a long run's resident memory stays that of one tile; elsewhere nothing is done (dask
    workers set ``MALLOC_TRIM_THRESHOLD_`` themselves)."""
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (``mallopt`` and ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def use_threads(threads: int | None) -> None:
    """Let torch use ``threads`` threads in this (worker) process; None leaves it be."""
    if threads is not None:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def portable_config(config):
    """``config`` with its loaded classifiers replaced by their bundle folders, so tasks carry
    names, not weights (workers load each once: :func:`worker_config`)."""
    from blastscope.models.classifier import Classifier

    def portable(model):
        if isinstance(model, Classifier) and model.path is not None:
            return str(model.path)
        return model

    return replace(
        config,
        blast_model=portable(config.blast_model),
        mutation_model=portable(config.mutation_model),
    )


def worker_config(config):
    """``config`` with its classifiers loaded from this worker's cache (each bundle once per
    process and weights hash: :func:`blastscope.pipeline.cached_classifier`)."""
    from blastscope.pipeline import cached_classifier

    def load(model, kind):
        return cached_classifier(model, kind) if isinstance(model, str) else model

    return replace(
        config,
        blast_model=load(config.blast_model, "blast"),
        mutation_model=load(config.mutation_model, "mutation"),
    )


def check_workers_see(cluster: Cluster, folder: Path) -> None:
    """Raise :class:`ClusterError` unless every worker of ``cluster`` sees ``folder`` (where
    tasks write their outputs): a probe file written here must exist for each of them."""
    import uuid

    probe = Path(folder) / f".blastscope-probe-{uuid.uuid4().hex}"
    probe.write_text("", encoding="utf-8")
    try:
        seen = cluster.client.run(os.path.exists, str(probe))
    finally:
        probe.unlink(missing_ok=True)
    blind = sorted(address for address, exists in seen.items() if not exists)
    if blind:
        raise ClusterError(
            f"The dask workers {', '.join(blind)} cannot see {folder}, where they write the "
            "slides they analyse. Give --out a folder on a file system the workers share, or "
            "run on this machine (--workers N without --scheduler)."
        )
