"""Every image (children run these too): what is really installed agrees with the image's lock, its
name and its labels (Azure ML once shipped an image whose name did not match its contents,
Azure/AzureML-Containers#133)."""

import hashlib
import json

from packaging.utils import canonicalize_name
from packaging.version import Version

from builder.matrix.compat import gpu_entry

INSTALLED = ("import importlib.metadata as m, json, sys; "
             "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], "
             "'dists': [[d.metadata['Name'], d.version] for d in m.distributions()]}))")


def _installed(run_python) -> tuple[str, dict[str, str]]:
    # The image's interpreter (the venv's, first on PATH) and {canonical name: version} of every
    # distribution importlib.metadata finds on its path.
    got = json.loads(run_python(INSTALLED))
    dists: dict[str, str] = {}
    for name, version in got["dists"]:
        key = canonicalize_name(name)
        assert key not in dists, f"{key} is installed twice ({dists[key]} and {version})"
        dists[key] = version
    return got["python"], dists


def _labels(docker_client, image) -> dict[str, str]:
    labels = docker_client.images.get(image).labels
    return {k.rsplit(".", 1)[-1] if not k.startswith("org.opencontainers") else k: v for k, v in labels.items()}


def test_the_installed_set_is_exactly_the_lock(run_python, expected):
    _, installed = _installed(run_python)
    missing = {n: v for n, v in expected["lock"].items() if n not in installed}
    extra = {n: v for n, v in installed.items() if n not in expected["lock"]}
    changed = {n: (v, installed[n]) for n, v in expected["lock"].items() if n in installed and installed[n] != v}
    assert (missing, extra, changed) == ({}, {}, {}), "installed set differs from the lock (missing, extra, changed)"


def test_the_lock_in_the_image_is_the_one_its_label_names(docker_client, image, expected, run_python):
    text = run_python(f"print(open({expected['venv'] + '/requirements.lock'!r}, 'rb').read().hex())")
    digest = "sha256:" + hashlib.sha256(bytes.fromhex(text)).hexdigest()
    arch = docker_client.images.get(image).attrs["Architecture"]
    label = "lock-digest" if arch == "amd64" else f"lock-digest-{arch}"  # one label per platform's lock
    assert digest == expected["lock_digest"] == _labels(docker_client, image)[label]


def test_name_and_labels_say_what_is_installed(docker_client, image, expected, run_python):
    python, installed = _installed(run_python)
    labels = _labels(docker_client, image)
    version = Version(installed[canonicalize_name(expected["package"].split("[")[0])])
    assert labels["org.opencontainers.image.title"] == expected["name"]
    assert labels["framework-version"] == labels["org.opencontainers.image.version"] == version.public
    assert labels["python"] == python
    major, minor = python.split(".")
    assert f"-py{major}{minor}-" in expected["name"]
    if labels["framework"] != "minimal":
        assert expected["name"].startswith(f"{labels['framework']}-{version.major}.{version.minor}-")
    cuda = gpu_entry(installed)  # CUDA and cuDNN as the installed nvidia-* wheels give them (as compat.yaml does)
    if labels["device"] == "cpu":
        assert cuda is None, f"a CPU image with nvidia-* wheels: {cuda}"
        assert "cuda" not in labels and expected["name"].endswith("-cpu-inference")
    elif cuda is not None:  # a GPU image whose CUDA comes from wheels (not from a CUDA base image)
        assert f"-cuda{cuda.cuda}-gpu-" in expected["name"]
        assert (labels.get("cuda"), labels.get("cudnn")) == (cuda.cuda, cuda.cudnn)


COMPILED = ("import importlib.util, json, pathlib, sys; "
            "site = pathlib.Path(next(p for p in sys.path if p.endswith('site-packages'))); "
            "sources = [p for p in site.rglob('*.py')]; "
            "print(json.dumps([len(sources), sum(pathlib.Path(importlib.util.cache_from_source(str(p))).exists() for p in sources)]))")


def test_the_environment_is_compiled_to_bytecode(run_python):
    # The image runs with PYTHONDONTWRITEBYTECODE on a read-only environment: a module without its
    # .pyc is compiled again by every worker of every container (seconds per start, minutes under QEMU).
    sources, compiled = json.loads(run_python(COMPILED))
    assert sources > 100 and compiled >= 0.95 * sources, f"{compiled} of {sources} modules have bytecode"
