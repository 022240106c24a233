"""Served load: the worker count comes from WORKER_COUNT, else from the container's CPU quota, and a
bad value stops the container before the server starts."""

import time
from pathlib import Path

import pytest

from builder.smoke import wait_healthy

APP = Path(__file__).resolve().parent


def _run(client, image, expected, **kwargs):
    return client.containers.run(image, detach=True, ports={f"{expected['port']}/tcp": ("127.0.0.1", None)},
                                 volumes={str(APP): {"bind": expected["app_root"], "mode": "ro"}}, **kwargs)


@pytest.mark.parametrize("env, nano_cpus, workers", [({}, 1_000_000_000, 1), ({}, 1_500_000_000, 2),
                                                      ({"WORKER_COUNT": "3"}, None, 3)])
def test_worker_count_follows_the_variable_or_the_cpu_quota(docker_client, image, expected, processes_uids, env,
                                                            nano_cpus, workers):
    start = time.monotonic()
    container = _run(docker_client, image, expected, environment=env, **({"nano_cpus": nano_cpus} if nano_cpus else {}))
    try:
        wait_healthy(container, start, expected["health_timeout"], expected["port"])
        assert f"serve: {workers} worker(s)" in container.logs().decode(errors="replace")
        # tini, the gunicorn master and one process per worker, once the workers have booted (a booting
        # worker may run a short-lived helper, e.g. ctypes' `ldconfig -p`)
        deadline = time.monotonic() + 30 * expected["slowdown"]
        while len(processes_uids(container)) != 2 + workers and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(processes_uids(container)) == 2 + workers, container.top()
    finally:
        container.remove(force=True)


def test_a_bad_worker_count_stops_the_container(docker_client, image, expected):
    container = _run(docker_client, image, expected, environment={"WORKER_COUNT": "many"})
    try:
        assert container.wait(timeout=60 * expected["slowdown"])["StatusCode"] == 2
        assert "WORKER_COUNT must be a whole number" in container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
