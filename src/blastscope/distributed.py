"""Where whole-slide tiles and batch slides run: in this process, on a ``LocalCluster`` of this
machine, or on a running dask scheduler (a cluster made with dask-jobqueue, Kubernetes, ...).

The driver (the process that runs ``blastscope run`` or ``batch``) sends tasks and writes every
file; workers only read the input and compute, so they need the slide files at the same paths
(a shared file system on a cluster). Each worker process loads each model once
(:func:`worker_config`: the bundles are cached per worker, by weights hash) and analyses one task
at a time with ``threads`` torch threads; a GPU on a worker is used (device ``auto``). On a
machine with CUDA GPUs a ``LocalCluster`` has one worker per GPU, each shown only its own
(:func:`local_worker_env`), as dask-cuda's workers are.
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
CUDA_ENV = "CUDA_VISIBLE_DEVICES"
"""The environment variable that tells CUDA which GPUs a process may use."""
WORKER_MEMORY_BYTES = 2_500_000_000
"""Memory a default worker is given room for: one tile of the default side with its halo, the
models and Python (at most about 1.3 GB measured with 2,048-pixel tiles in
benchmarks/bench_wholeslide.py, with margin)."""
CONNECT_TIMEOUT_S = 10
WORKER_START_TIMEOUT_S = 120
"""How long a ``LocalCluster``'s workers may take to start (a busy machine starts them slowly)."""
MALLOC_ARENAS = 2
"""glibc malloc arenas a process that analyses tiles keeps (see :func:`limit_malloc_arenas`)."""
M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number for the most arenas."""


class ClusterError(BlastscopeError):
    """A cluster could not be started or reached."""


@dataclass(frozen=True)
class ClusterSettings:
    """How to run: ``workers`` processes of a ``LocalCluster`` (None: :func:`default_workers`;
    0: in this process, no cluster), ``threads`` torch threads per worker (None: the cores
    shared out), or the running scheduler at ``scheduler`` (``tcp://HOST:PORT``), whose own
    workers are used. When neither ``workers`` nor ``scheduler`` is given, the
    ``DASK_SCHEDULER_ADDRESS`` environment variable names the scheduler, if set. ``device``: the
    torch device of the tasks (with ``auto`` or ``cuda``, a ``LocalCluster`` shares this
    machine's GPUs out among its workers: :func:`shared_gpus`)."""

    workers: int | None = None
    threads: int | None = None
    scheduler: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.scheduler and self.workers is not None:
            raise ClusterError(
                f"--workers {self.workers} asks for workers on this machine and --scheduler "
                f"{self.scheduler} for a running cluster's: give only one of them (a cluster's "
                "workers are chosen where they start, e.g. `dask worker ADDRESS --nworkers N`)."
            )

    def address(self) -> str | None:
        """The scheduler to connect to, if any: ``scheduler``, else the environment's, unless
        ``workers`` was given (a LocalCluster, or this process)."""
        if self.scheduler:
            return self.scheduler
        if self.workers is not None:
            return None
        return os.environ.get(SCHEDULER_ENV) or None

    def in_process(self) -> bool:
        """True when the work runs in this process (``workers`` 0 and no scheduler)."""
        return self.workers == 0 and self.address() is None


def available_cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(threads: int = 1, gpus: int = 0) -> int:
    """Workers for a ``LocalCluster``: one per GPU when it shares out ``gpus`` of them
    (dask-cuda's convention), else one per ``threads`` cores; as many as memory allows
    (:data:`WORKER_MEMORY_BYTES` each), at least one."""
    import psutil

    wanted = gpus or available_cores() // max(1, threads)
    by_memory = int(psutil.virtual_memory().available // WORKER_MEMORY_BYTES)
    return max(1, min(wanted, by_memory))


def shared_gpus(device: str) -> int:
    """The CUDA GPUs a ``LocalCluster`` shares out among its workers for tasks on ``device``:
    all this process sees for ``auto`` and ``cuda``; none for ``cuda:N`` (every worker uses that
    one), ``cpu`` or ``mps``."""
    if device.strip().lower() not in ("auto", "cuda"):
        return 0
    from blastscope.devices import cuda_device_count

    return cuda_device_count()


def local_worker_env(index: int, gpus: int) -> dict[str, str]:
    """The environment of ``LocalCluster`` worker ``index``: glibc's arena limit (as in this
    process) and, when it shares out ``gpus`` GPUs, GPU ``index % gpus`` of those this process
    sees as the worker's only one (``CUDA_VISIBLE_DEVICES``), so that its ``cuda:0`` is a GPU
    of its own. A worker of a running cluster (dask-cuda's, say) keeps the GPUs it was given."""
    env = {"MALLOC_ARENA_MAX": str(MALLOC_ARENAS)}
    if gpus:
        visible = [name.strip() for name in os.environ.get(CUDA_ENV, "").split(",")]
        ids = [name for name in visible if name] or [str(number) for number in range(gpus)]
        env[CUDA_ENV] = ids[index % min(gpus, len(ids))]
    return env


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
            try:
                client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
            except TimeoutError:
                raise ClusterError(
                    f"The dask scheduler at {address} has no workers: start some where the "
                    f"slides can be read (`dask worker {address}`), or unset --scheduler and "
                    f"{SCHEDULER_ENV} to run on this machine."
                ) from None
            yield Cluster(client, settings.threads)
        finally:
            client.close()
        return
    threads = settings.threads or 1
    gpus = shared_gpus(settings.device)
    workers = settings.workers or default_workers(threads, gpus)
    local = LocalCluster(
        n_workers=0,  # started below, each with an environment of its own
        threads_per_worker=1,  # one task at a time per worker: memory holds one tile each
        memory_limit=1 / workers,  # a share of this machine's memory each
        processes=True,
        dashboard_address=None,
        # no dashboard, and the scheduler's health routes on a free port: a second run at once
        # would otherwise warn on the terminal that port 8787 is taken
        scheduler_kwargs={"dashboard_address": ":0"},
        silence_logs=logging.ERROR,
    )
    client = None
    try:
        for index in range(workers):
            options = {**local.new_spec["options"], "env": local_worker_env(index, gpus)}
            local.worker_spec[index] = {**local.new_spec, "options": options}
        local.scale(workers)
        client = Client(local)
        try:
            client.wait_for_workers(workers, timeout=WORKER_START_TIMEOUT_S)
        except TimeoutError:
            raise ClusterError(
                f"The {workers} dask workers of this machine did not start within "
                f"{WORKER_START_TIMEOUT_S} s: ask for fewer (--workers N), or run in this "
                "process with --workers 0."
            ) from None
        yield Cluster(client, threads)
    finally:
        if client is not None:
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
