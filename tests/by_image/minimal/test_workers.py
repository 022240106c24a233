"""Served load: the worker count comes from WORKER_COUNT, else from the container's CPU quota, and a
bad value stops the container before the server starts."""

import time
from pathlib import Path

import pytest

from builder.extend.deploy import wait_healthy
from builder.run.smoke import wait_workers

APP = Path(__file__).resolve().parent


def _run(client, image, expected, **kwargs):
    return client.containers.run(image, detach=True, ports={f"{expected['port']}/tcp": ("127.0.0.1", None)},
                                 volumes={str(APP): {"bind": expected["app_root"], "mode": "ro"}}, **kwargs)


@pytest.mark.parametrize("env, nano_cpus, workers", [({}, 1_000_000_000, 1), ({}, 1_500_000_000, 2),
                                                      ({"WORKER_COUNT": "3"}, None, 3)])
def test_worker_count_follows_the_variable_or_the_cpu_quota(docker_client, image, expected, env, nano_cpus, workers):
    start = time.monotonic()
    container = _run(docker_client, image, expected, environment=env, **({"nano_cpus": nano_cpus} if nano_cpus else {}))
    try:
        wait_healthy(container, start, expected["health_timeout"], expected["port"])
        logs = container.logs().decode(errors="replace")
        assert f"serve: {workers} worker(s)" in logs, logs[-3000:]
        # by role: the gunicorn master's children, waited for (a worker may still be booting)
        wait_workers(container, workers, expected["health_timeout"])
    finally:
        container.remove(force=True)


def test_a_bad_worker_count_stops_the_container(docker_client, image, expected):
    container = _run(docker_client, image, expected, environment={"WORKER_COUNT": "many"})
    try:
        assert container.wait(timeout=expected["health_timeout"])["StatusCode"] == 2
        assert "WORKER_COUNT must be a whole number" in container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
