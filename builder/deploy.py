"""Deploy an image locally with a model and an entry script mounted read-only (Azure ML's
LocalWebservice; the ``builder serve`` command): the container runs as the image's own non-root
user, the server's port (``runtime.port``) is published on 127.0.0.1:<port>, and the caller gets the
scoring and swagger URIs once ``GET /`` is healthy. :data:`MODEL_MOUNT` is where models are mounted
here and in the smoke tests (beside the app root, which is mounted read-only)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import docker

from builder.schema import Runtime
from builder.smoke import wait_healthy

MODEL_MOUNT = "/var/azureml-models"


@dataclass
class Served:
    """A running local service. URIs are ``http://127.0.0.1:<port>/score`` and ``/swagger.json``."""

    container: docker.models.containers.Container
    url: str
    seconds_to_healthy: float

    @property
    def scoring_uri(self) -> str:
        return f"{self.url}/score"

    @property
    def swagger_uri(self) -> str:
        return f"{self.url}/swagger.json"


def mounts(model: Path | None, entry_script: Path, app_root: str) -> tuple[dict, dict[str, str]]:
    """docker-py volumes and environment for serving ``entry_script`` (its folder becomes the app
    root) with ``model`` (a file or a folder) under AZUREML_MODEL_DIR. All mounts are read-only."""
    entry_script = entry_script.resolve()
    volumes = {str(entry_script.parent): {"bind": app_root, "mode": "ro"}}
    env = {"AZUREML_ENTRY_SCRIPT": entry_script.name}
    if model is not None:
        model = model.resolve()
        bind = MODEL_MOUNT if model.is_dir() else f"{MODEL_MOUNT}/{model.name}"
        volumes[str(model)] = {"bind": bind, "mode": "ro"}
        env["AZUREML_MODEL_DIR"] = MODEL_MOUNT
    return volumes, env


@contextmanager
def running(client: docker.DockerClient, image: str, model: Path | None, entry_script: Path, port: int,
            runtime: Runtime, env: dict[str, str] | None = None, timeout: float = 300.0) -> Iterator[Served]:
    """Run ``image`` until the ``with`` block ends, then stop and remove the container.

    ``port`` 0 picks a free host port. Raises smoke.NotHealthy (with the log tail) when the server
    exits or is not healthy within ``timeout`` seconds; docker.errors.APIError when the port is taken.
    """
    volumes, environment = mounts(model, entry_script, runtime.app_root)
    start = time.monotonic()
    container = client.containers.run(image, detach=True, volumes=volumes,
                                      environment={**environment, **(env or {})},
                                      ports={f"{runtime.port}/tcp": ("127.0.0.1", port or None)})
    try:
        url = wait_healthy(container, start, timeout, runtime.port)
        yield Served(container, url, time.monotonic() - start)
    finally:
        try:
            container.stop(timeout=10)
        finally:
            container.remove(force=True)
