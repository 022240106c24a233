"""Deploy an image locally with a model and an entry script mounted read-only (Azure ML's
LocalWebservice; the ``builder serve`` command): the container runs as the image's own non-root
user, the server's port (``runtime.port``) is published on 127.0.0.1:<port>, and the caller gets the
scoring and swagger URIs once ``GET /`` is healthy (:func:`wait_healthy`, which the smoke tests and
benchmarks use too). Where the app and the model are mounted, and the server's port, come from the
matrix's ``runtime`` (``app_root``, ``model_mount``, ``port``) only; the model is mounted beside the
app root, never inside it: the app root is a read-only mount, where no mount point can be made."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import docker
import requests

from builder.matrix.schema import Runtime


class NotHealthy(RuntimeError):
    """A scoring container exited, or did not answer ``GET /`` in time; the message has its log tail."""


def wait_healthy(container, start: float, timeout: float, port: int, poll: float = 0.1) -> str:
    """Wait until ``container`` (docker-py, its ``port``/tcp published on the host) answers ``GET /`` with 200.

    ``start`` is the time.monotonic() at which the container was started and ``timeout`` the seconds
    allowed from then. Returns the base URL (``http://127.0.0.1:<host port>``). Raises NotHealthy
    when the container exits first or the time runs out.
    """
    deadline = start + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status in ("exited", "dead"):
            raise NotHealthy(f"container exited with code {container.attrs['State']['ExitCode']} before it was "
                             f"healthy:\n{container.logs().decode(errors='replace')[-4000:]}")
        ports = container.ports.get(f"{port}/tcp")
        if ports:
            url = f"http://127.0.0.1:{ports[0]['HostPort']}"
            try:
                if requests.get(f"{url}/", timeout=2).status_code == 200:
                    return url
            except requests.RequestException:
                pass
        time.sleep(poll)
    raise NotHealthy(f"GET / not healthy within {timeout:.0f} s:\n{container.logs().decode(errors='replace')[-4000:]}")


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


def mounts(model: Path | None, entry_script: Path, runtime: Runtime) -> tuple[dict, dict[str, str]]:
    """docker-py volumes and environment for serving ``entry_script`` (its folder becomes
    ``runtime.app_root``) with ``model`` (a file or a folder) at ``runtime.model_mount``, named by
    AZUREML_MODEL_DIR. All mounts are read-only."""
    entry_script = entry_script.resolve()
    volumes = {str(entry_script.parent): {"bind": runtime.app_root, "mode": "ro"}}
    env = {"AZUREML_ENTRY_SCRIPT": entry_script.name}
    if model is not None:
        model = model.resolve()
        volumes[str(model)] = {"bind": _model_target(model, runtime.model_mount), "mode": "ro"}
        env["AZUREML_MODEL_DIR"] = runtime.model_mount
    return volumes, env


def _model_target(model: Path, model_mount: str) -> str:
    # A model folder is the mount itself; a model file goes inside it under its own name.
    return model_mount if model.is_dir() else f"{model_mount}/{model.name}"


def compose_service(image: str, app: Path, model: Path | None, *, port: int, app_root: str, uid: int,
                    model_mount: str, host_port: int | None = None, entry_script: str = "score.py") -> dict:
    """One Compose service (https://docs.docker.com/reference/compose-file/services/) that serves
    ``app``/``entry_script`` from ``image`` as the image's non-root ``uid``: app (at ``app_root``)
    and model (at ``model_mount``) mounted read-only, the server's ``port`` published on 127.0.0.1
    (``host_port``, or one the Engine picks). ``port``, ``app_root``, ``uid`` and ``model_mount`` are
    the matrix's ``runtime`` values. The smoke tests and ``builder serve --compose-file`` both use it."""
    volumes = [{"type": "bind", "source": str(app.resolve()), "target": app_root, "read_only": True}]
    env = {"AZUREML_ENTRY_SCRIPT": entry_script}
    if model is not None:
        model = model.resolve()
        volumes.append({"type": "bind", "source": str(model), "target": _model_target(model, model_mount),
                        "read_only": True})
        env["AZUREML_MODEL_DIR"] = model_mount
    published = f"127.0.0.1:{host_port}:{port}" if host_port else f"127.0.0.1::{port}"
    return {"image": image, "user": str(uid), "ports": [published], "volumes": volumes, "environment": env}


COMPOSE_HEADER = "# Generated by `builder serve --compose-file`; run it with `docker compose -f FILE up`.\n"


def compose_file(services: dict[str, dict]) -> str:
    """A Compose file with ``services`` (name -> :func:`compose_service`), headed by a comment."""
    import yaml

    return COMPOSE_HEADER + yaml.safe_dump({"services": services}, sort_keys=False)


@contextmanager
def running(client: docker.DockerClient, image: str, model: Path | None, entry_script: Path, port: int,
            runtime: Runtime, env: dict[str, str] | None = None, timeout: float = 300.0) -> Iterator[Served]:
    """Run ``image`` until the ``with`` block ends, then stop and remove the container.

    ``port`` 0 picks a free host port. Raises NotHealthy (with the log tail) when the server
    exits or is not healthy within ``timeout`` seconds; docker.errors.APIError when the port is taken.
    """
    volumes, environment = mounts(model, entry_script, runtime)
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
