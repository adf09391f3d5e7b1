"""Where tiles and slides run: DASK_SCHEDULER_ADDRESS is a default that --workers overrides,
workers started in another folder get absolute paths, and a LocalCluster on a machine with
CUDA GPUs has one worker per GPU, each shown only its own (a stand-in GPU count: no CUDA here)."""

from __future__ import annotations

import operator
import os

import imageio.v3 as iio
import pandas as pd
import pytest
from dask.distributed import Client, LocalCluster

from blastscope import devices, distributed
from blastscope.cli import main
from blastscope.distributed import (
    CUDA_ENV,
    SCHEDULER_ENV,
    ClusterError,
    ClusterSettings,
    cluster,
    default_workers,
    local_worker_env,
    shared_gpus,
)
from blastscope.synthetic import generate_field
from test_slide import write_ome_pyramid


def fake_gpu_count() -> int:
    """Stand-in for :func:`blastscope.devices.cuda_device_count` on a machine with 3 CUDA GPUs
    (CUDA cannot run here)."""
    return 3


def local_cluster(processes: bool) -> LocalCluster:
    """A one-worker dask cluster on loopback, as a running scheduler blastscope connects to."""
    return LocalCluster(
        n_workers=1, threads_per_worker=1, processes=processes, dashboard_address=None
    )


def test_the_scheduler_variable_is_used_unless_workers_are_given(monkeypatch):
    with local_cluster(processes=False) as running:
        monkeypatch.setenv(SCHEDULER_ENV, running.scheduler_address)
        with cluster(ClusterSettings()) as connected:
            assert connected.client.scheduler.address == running.scheduler_address
            assert connected.client.submit(operator.add, 1, 2).result() == 3
        with cluster(ClusterSettings(workers=0)) as here:
            assert here is None  # in this process, the variable notwithstanding
    assert ClusterSettings(workers=2).address() is None  # a LocalCluster of 2, not the variable


def test_a_scheduler_without_workers_is_named_with_the_fix(monkeypatch):
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT_S", 1)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as bare:
        settings = ClusterSettings(scheduler=bare.scheduler_address)
        refused = pytest.raises(ClusterError, match=r"has no workers: start some .*`dask worker")
        with refused, cluster(settings):
            pass


def test_workers_with_a_scheduler_are_refused_before_anything_is_read(tmp_path, capsys):
    with pytest.raises(ClusterError, match="give only one of them"):
        ClusterSettings(workers=2, scheduler="tcp://127.0.0.1:8786")
    missing = str(tmp_path / "no-such-folder")
    argv = ["--out", str(tmp_path), "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"]
    assert main(["batch", missing, *argv]) == 1
    error = capsys.readouterr().err
    assert "--workers 2 asks for workers on this machine and --scheduler" in error
    assert "Traceback" not in error


def test_workers_started_in_another_folder_find_relative_inputs_and_outputs(
    tmp_path, monkeypatch, capsys
):
    """The slide, the fields and --out given relative to this folder reach workers whose own
    working folder is elsewhere (as a `dask worker` started on another machine's home)."""
    field = generate_field(8, "default", shape=(512, 512))
    write_ome_pyramid(tmp_path / "slide.ome.tif", field.image, field.pixel_size_um)
    (tmp_path / "fields" / "patient-a").mkdir(parents=True)
    small = generate_field(2, "default", shape=(384, 384))
    iio.imwrite(tmp_path / "fields" / "patient-a" / "field.png", small.image)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    with local_cluster(processes=True) as running, Client(running) as client:
        client.run(os.chdir, str(elsewhere))
        address = ["--scheduler", running.scheduler_address]
        tiled = ["run", "slide.ome.tif", "--tiled", "--slide-tile", "512", "--out", "out"]
        assert main([*tiled, *address]) == 0
        assert "(1 tiles analysed, 0 from an earlier run)" in capsys.readouterr().out
        batch = ["batch", "fields", "--out", "batch", "--pixel-size", "0.1", *address]
        assert main(batch) == 0
    assert (tmp_path / "out" / "slide.tiled" / "slide.json").is_file()
    summary = pd.read_csv(tmp_path / "batch" / "summary.csv").set_index("slide_id")
    assert summary.loc["patient-a", "status"] == "done"
    assert "analysed on dask worker" in summary.loc["patient-a", "notes"]
    assert (tmp_path / "batch" / "patient-a" / "field_cells.csv").is_file()
    assert not list(elsewhere.iterdir())  # nothing written where the worker runs


def test_gpus_are_shared_out_one_worker_each(monkeypatch):
    monkeypatch.setattr(devices, "cuda_device_count", fake_gpu_count)
    monkeypatch.setattr(distributed, "WORKER_MEMORY_BYTES", 1)  # memory is no limit here
    monkeypatch.delenv(CUDA_ENV, raising=False)
    assert [shared_gpus(device) for device in ("auto", "cuda", "cuda:1", "cpu")] == [3, 3, 0, 0]
    assert default_workers(threads=1, gpus=3) == 3  # one per GPU, whatever the cores
    assert default_workers(threads=1, gpus=0) == distributed.available_cores()
    assert [local_worker_env(index, 3)[CUDA_ENV] for index in range(4)] == ["0", "1", "2", "0"]
    assert CUDA_ENV not in local_worker_env(0, 0)  # no GPU shared out: the worker's own
    monkeypatch.setenv(CUDA_ENV, "5,7,GPU-a1b2")  # this process sees only these
    assert [local_worker_env(index, 3)[CUDA_ENV] for index in range(3)] == ["5", "7", "GPU-a1b2"]


def test_each_local_worker_is_shown_its_own_gpu(monkeypatch):
    monkeypatch.setattr(devices, "cuda_device_count", fake_gpu_count)
    monkeypatch.setattr(distributed, "WORKER_MEMORY_BYTES", 1)
    monkeypatch.delenv(CUDA_ENV, raising=False)
    with cluster(ClusterSettings(threads=1)) as workers:
        seen = workers.client.run(
            lambda dask_worker: (dask_worker.name, os.environ.get(CUDA_ENV))
        ).values()
    assert sorted(seen) == [(0, "0"), (1, "1"), (2, "2")]
    with cluster(ClusterSettings(workers=1, device="cpu")) as workers:
        (visible,) = workers.client.run(lambda: os.environ.get(CUDA_ENV)).values()
    assert visible is None  # cpu tasks: no GPU handed out


_KEPT_ON_THE_WORKER: list = []
"""What :func:`_loaded_model_ids` saw, kept alive so that an id cannot be reused by a new object."""


def _loaded_model_ids(config) -> tuple[int, int, int]:
    """On a worker: which objects its tasks analyse with (the classifiers and the segmenter)."""
    from blastscope.distributed import worker_config
    from blastscope.segment.loading import load_segmenter

    mine = worker_config(config)
    segmenter = load_segmenter(config.segmentation.model, config.segmentation.device)
    models = (mine.blast_model, mine.mutation_model, segmenter)
    _KEPT_ON_THE_WORKER.append(models)
    return tuple(id(model) for model in models)


def test_each_worker_loads_each_model_once_and_tasks_carry_only_their_names():
    from blastscope.distributed import portable_config
    from blastscope.pipeline import PipelineConfig, loaded

    portable = portable_config(loaded(PipelineConfig()))
    assert isinstance(portable.blast_model, str)  # a bundle's folder, not its weights
    assert isinstance(portable.mutation_model, str)
    with cluster(ClusterSettings(workers=1, threads=1)) as workers:
        first, second = (
            workers.client.submit(_loaded_model_ids, portable, pure=False).result()
            for _ in range(2)
        )
    assert first == second  # the second task found every model loaded
