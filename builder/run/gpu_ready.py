"""GPU readiness without a GPU: does every CUDA library a GPU image's framework loads resolve in
the image, except the driver's? Runs INSIDE the image: the smoke tests (``tests/by_image/gpu``)
send this file's source to ``python3 -c`` in a container, so it imports the standard library only
and runs on every Python a base has (3.10 and later).

Two independent readings, each giving the sonames that did not resolve:

- :func:`drive`: the framework's own GPU code path (an ONNX Runtime session with the CUDA execution
  provider, ``torch.cuda.init()`` with cuDNN, cuBLAS and NCCL, TensorFlow's GPU device listing,
  XGBoost training with ``device="cuda"``) in a child process with the loader's ``LD_DEBUG=files``
  log (glibc's ld.so(8): "files: display progress for input file"); a library the loader was asked
  for and never mapped is missing (:func:`parse_loader_log`). The framework's own messages are kept
  and read too (:func:`missing_in_messages`, :func:`no_driver`).
- :func:`closure`: Debian's ``ldd`` (libc-bin) over the framework's CUDA libraries and every shared
  library of NVIDIA's wheels (``site-packages/nvidia``): the whole DT_NEEDED closure, resolved by the
  image's own loader with its own path (:func:`parse_ldd`).

Either passes when only :data:`DRIVER_LIBRARIES` are missing: those come with the NVIDIA driver, which
the NVIDIA Container Toolkit mounts into a container at run time
(https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/). :func:`report` also reads
the versions of the CUDA runtime, cuDNN and NCCL libraries the image resolves (each library's own
version call) and the compute capabilities the framework was built for, where it says.
"""

from __future__ import annotations

import ctypes
import fnmatch
import glob
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile

#: The driver's libraries: libcuda.so.1 (the CUDA driver API) and libnvidia-ml.so.1 (NVML), both
#: installed by the NVIDIA driver and mounted by the NVIDIA Container Toolkit, never by an image.
DRIVER_LIBRARIES = frozenset({"libcuda.so.1", "libnvidia-ml.so.1"})

#: What each framework's error says when it found no driver (not a missing library of the image):
#: PyTorch's "Found no NVIDIA driver on your system" (torch/csrc/cuda/Module.cpp), TensorFlow's
#: "failed call to cuInit" (xla/stream_executor/cuda/cuda_diagnostics and cuda_driver), XGBoost's
#: "No visible GPU is found" (src/context.cc) and the CUDA runtime's cudaErrorInsufficientDriver /
#: cudaErrorNoDevice texts (CUDA Runtime API, "Error Handling").
NO_DRIVER = re.compile(r"Found no NVIDIA driver|failed call to cuInit|No visible GPU is found"
                       r"|CUDA driver version is insufficient|no CUDA-capable device is detected"
                       r"|libcuda\.so\.1: cannot open shared object file")

#: Shared objects of NVIDIA's wheels and of the frameworks that are plugins for what an inference image
#: does not offer: ``(file name glob, the libraries it may miss, why)``. Only those libraries may be
#: missing from those files' closures; anything else they miss still fails.
OPTIONAL = (
    ("libonnxruntime_providers_tensorrt.so", frozenset({"libnvinfer.so.10", "libnvonnxparser.so.10"}),
     "ONNX Runtime's TensorRT provider: onnxruntime-gpu[cuda,cudnn] installs no TensorRT"),
    ("nvshmem_bootstrap_*.so*", frozenset({"libmpi.so.40", "libpmix.so.2", "liboshmem.so.40"}),
     "NVSHMEM's MPI, PMIx and OpenSHMEM bootstraps: a cluster's launcher, loaded only when NVSHMEM_BOOTSTRAP names it"),
    ("nvshmem_transport_*.so*", frozenset({"libmlx5.so.1", "libibverbs.so.1", "libfabric.so.1", "libucp.so.0",
                                           "libucs.so.0"}),
     "NVSHMEM's InfiniBand, libfabric and UCX transports: a multi-node host's network stack"),
    ("libcufile_rdma.so*", frozenset({"libmlx5.so.1", "libibverbs.so.1", "librdmacm.so.1"}),
     "cuFile's RDMA plugin: GPUDirect Storage over InfiniBand (rdma-core)"),
)

#: Per framework, the files (globs under site-packages) whose closure is resolved, besides every
#: shared library under ``nvidia/`` (the wheels' CUDA libraries).
ROOTS = {
    "onnxruntime": ("onnxruntime/capi/*.so*",),
    "pytorch": ("torch/lib/*.so*", "torch/_C*.so"),
    "tensorflow": ("tensorflow/**/*.so*",),
    "xgboost": ("xgboost/lib/*.so*",),
}

#: A soname or file name as the loader and ldd print it (letters, digits, ``_.+-``, a path's ``/``).
_NAME = re.compile(r"[A-Za-z0-9_.+/-]{1,4096}")
#: The most lines of a log or of ldd's output read.
MAX_LINES = 2_000_000

# A 64x64 MatMul model (ONNX opset 13), serialized with the onnx package.
_ONNX_MATMUL = "CAg6QAoRCgF4CgF4EgF5IgZNYXRNdWwSAWdaEwoBeBIOCgwIARIICgIIQAoCCEBiEwoBeRIOCgwIARIICgIIQAoCCEBCBAoAEA0="


def _name(text: str) -> str:
    # A name read back from ldd or the loader's log, refused unless it is one.
    if not _NAME.fullmatch(text):
        raise ValueError(f"not a library name: {text[:80]!r}")
    return text


def _lines(text: str) -> list[str]:
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise ValueError(f"more than {MAX_LINES} lines")
    return lines


def parse_ldd(text: str) -> dict[str, str | None]:
    """``{soname: resolved path, or None when not found}`` from glibc's ``ldd`` output (one
    ``name => path (address)``, ``name => not found`` or ``path (address)`` line per object; the
    vDSO and the loader, which have no soname to resolve, are left out). A file that is not dynamic
    gives ``{}``. Raises ValueError for a line of no such form or a name that is not a library's."""
    out: dict[str, str | None] = {}
    for line in _lines(text):
        line = line.strip()
        if not line or line in ("statically linked", "not a dynamic executable"):
            continue
        m = re.fullmatch(r"(\S+) => (?:not found|(\S+) \(0x[0-9a-f]+\)|(\S+))", line)
        if m:
            out[_name(m.group(1))] = _name(m.group(2) or m.group(3)) if (m.group(2) or m.group(3)) else None
        elif not re.fullmatch(r"\S+ \(0x[0-9a-f]+\)", line):
            raise ValueError(f"not a line of ldd's: {line[:120]!r}")
    return out


def parse_loader_log(text: str) -> tuple[set[str], set[str]]:
    """``(asked, mapped)``: the libraries the loader was asked for and those it mapped, from an
    ``LD_DEBUG=files`` log (glibc prints ``file=NAME [NS];  needed by X`` or ``dynamically loaded by
    X`` when it starts looking for NAME, ``file=NAME [NS];  generating link map`` when it maps the
    file it found). A name can be a path (dlopen of a file). Raises ValueError for a name that is
    not a library's."""
    asked: set[str] = set()
    mapped: set[str] = set()
    for line in _lines(text):
        m = re.search(r"\bfile=(\S+) \[\d+\];\s+(needed by|dynamically loaded by|generating link map)", line)
        if m:
            (mapped if m.group(2) == "generating link map" else asked).add(_name(m.group(1)))
    return asked, mapped


def _versioned(name: str) -> tuple[str, tuple[int, ...]] | None:
    m = re.fullmatch(r"(.*\.so)((?:\.\d+)+)", os.path.basename(name))
    return (m.group(1), tuple(int(p) for p in m.group(2)[1:].split("."))) if m else None


def superseded(name: str, found: set[str]) -> bool:
    """True when ``name`` (``libX.so.9.20.0``) is a more precise version of a library ``found`` holds
    under a shorter one (``libX.so.9``): a library that looks for its companions by their full
    version first, then by their soname (cuDNN 9 opens ``libcudnn_graph.so.9.20.0``, then
    ``.so.9.20``, then ``.so.9``), found it; the first tries were not failures."""
    mine = _versioned(name)
    if mine is None:
        return False
    for other in found:
        theirs = _versioned(other)
        if theirs and theirs[0] == mine[0] and len(theirs[1]) < len(mine[1]) and mine[1][:len(theirs[1])] == theirs[1]:
            return True
    return False


def unmapped(asked: set[str], mapped: set[str]) -> list[str]:
    """The names asked for and never mapped (:func:`parse_loader_log`), less those
    :func:`superseded` by a mapped one, sorted."""
    return sorted(n for n in asked - mapped if not superseded(n, mapped))


def missing_in_messages(text: str) -> list[str]:
    """The sonames a framework's messages say could not be opened (dlopen's ``NAME: cannot open
    shared object file``, as ONNX Runtime and TensorFlow log it), sorted."""
    return sorted({_name(m) for m in re.findall(r"([A-Za-z0-9_.+-]+\.so[0-9.]*): cannot open shared object file", text)})


def no_driver(text: str) -> bool:
    """True when a framework's error or log says it found no NVIDIA driver (:data:`NO_DRIVER`)."""
    return bool(NO_DRIVER.search(text))


def not_the_drivers(names) -> list[str]:
    """The names (sonames or paths) that are not :data:`DRIVER_LIBRARIES`, sorted."""
    return sorted({n for n in names if os.path.basename(n) not in DRIVER_LIBRARIES})


def optional_missing(path: str) -> frozenset[str]:
    """The libraries :data:`OPTIONAL` lets the closure of ``path`` (a file) miss; empty for most."""
    return frozenset().union(*(libs for pattern, libs, _ in OPTIONAL if fnmatch.fnmatch(os.path.basename(path), pattern)))


def unexpected(closure_: dict[str, list[str]]) -> dict[str, list[str]]:
    """``{path: [missing]}`` of :func:`closure`'s result less the driver's libraries and what
    :func:`optional_missing` allows for each file; only the files still missing something."""
    out = {}
    for path, missing in closure_.items():
        left = [n for n in not_the_drivers(missing) if n not in optional_missing(path)]
        if left:
            out[path] = left
    return out


def decode_version(kind: str, code: int) -> str:
    """A library's version call's integer as ``major.minor.patch``: ``cudart`` from
    cudaRuntimeGetVersion (1000*major + 10*minor; CUDA Runtime API, "Version Management"),
    ``cudnn`` from cudnnGetVersion (CUDNN_VERSION: 10000*major + 100*minor + patch from cuDNN 9,
    1000*major + 100*minor + patch before; cuDNN API reference), ``nccl`` from ncclGetVersion
    (NCCL_VERSION_CODE: 10000*major + 100*minor + patch from NCCL 2.9, 1000*major + 100*minor +
    patch before; nccl.h). Raises ValueError for an unknown kind or a code that is no version."""
    if code <= 0:
        raise ValueError(f"{kind}: no version in {code}")
    if kind == "cudart":
        return f"{code // 1000}.{code % 1000 // 10}"
    if kind == "cudnn":
        major = code // 10000 if code >= 90000 else code // 1000
        rest = code % 10000 if code >= 90000 else code % 1000
        return f"{major}.{rest // 100}.{rest % 100}"
    if kind == "nccl":
        wide = code >= 20900
        return f"{code // (10000 if wide else 1000)}.{code % (10000 if wide else 1000) // 100}.{code % 100}"
    raise ValueError(f"unknown library kind {kind!r}")


# --- inside the image -------------------------------------------------------------------------------

def site_packages() -> str:
    """The environment's site-packages (the image's virtual environment when it runs there)."""
    return sysconfig.get_paths()["purelib"]


def wheel_libraries(site: str | None = None) -> list[str]:
    """Every shared library NVIDIA's wheels installed (``*.so*`` files under ``site``/nvidia), sorted."""
    found = glob.glob(os.path.join(site or site_packages(), "nvidia", "**", "*.so*"), recursive=True)
    return sorted(p for p in found if os.path.isfile(p) and not p.endswith((".py", ".pyc")))


def roots(framework: str, site: str | None = None) -> list[str]:
    """The shared objects whose closure :func:`closure` resolves: :func:`wheel_libraries` and the
    framework's own (:data:`ROOTS`); sorted paths."""
    site = site or site_packages()
    found = set(wheel_libraries(site))
    for pattern in ROOTS.get(framework, ()):
        found |= {p for p in glob.glob(os.path.join(site, pattern), recursive=True) if os.path.isfile(p)}
    return sorted(found)


def closure(paths: list[str], ldd: str = "ldd") -> dict[str, list[str]]:
    """``{path: [sonames not found]}`` for each of ``paths`` whose DT_NEEDED closure does not fully
    resolve with the loader's own search (RPATH/RUNPATH, LD_LIBRARY_PATH, /etc/ld.so.cache, the
    default directories), read with ``ldd`` (glibc's: it has the loader list, not run, the objects;
    ld.so(8)). A file ldd calls not dynamic is skipped. Raises ValueError when ldd's output is
    not ldd's."""
    out = {}
    for path in paths:
        r = subprocess.run([ldd, path], capture_output=True, text=True, errors="replace")
        missing = sorted(n for n, p in parse_ldd(r.stdout).items() if p is None)
        if missing:
            out[path] = missing
    return out


def by_soname(paths: list[str]) -> dict[str, str]:
    """``{file name: dlopen's error}`` for each of ``paths`` named like a soname (``lib*.so.N``) and
    not :data:`OPTIONAL` that dlopen cannot open by that name alone, as any process of the image
    would (no RPATH of a framework's to help): what LD_LIBRARY_PATH or /etc/ld.so.cache must give."""
    out = {}
    for path in paths:
        name = os.path.basename(path)
        if not re.fullmatch(r"lib.*\.so(\.\d+)+", name) or optional_missing(path) or name in out:
            continue
        try:
            ctypes.CDLL(name)
        except OSError as exc:
            out[name] = str(exc)
    return out


def _drive_onnxruntime() -> dict:
    # An InferenceSession asking for the CUDA execution provider first, as a user's score.py does.
    import base64
    import numpy as np
    import onnxruntime as ort
    session = ort.InferenceSession(base64.b64decode(_ONNX_MATMUL),
                                   providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    session.run(None, {"x": np.ones((64, 64), np.float32)})
    return {"providers": session.get_providers()}


def _drive_pytorch() -> dict:
    # cuDNN's and NCCL's version calls load them; cuBLAS is a DT_NEEDED of libtorch_cuda.so; then
    # torch.cuda.init(), which needs the driver. The arch flags are the CUDA targets it was built for.
    import torch
    out = {"arch_flags": torch._C._cuda_getArchFlags() or "", "cudnn_built": str(torch.backends.cudnn.version()),
           "nccl_built": ".".join(map(str, torch.cuda.nccl.version())), "cuda_built": torch.version.cuda}
    try:
        torch.cuda.init()
    except Exception as exc:  # the driver's absence
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def _drive_tensorflow() -> dict:
    # Listing the GPUs initializes the CUDA platform (cuInit, in the driver); TensorFlow opens its
    # CUDA libraries (cudart, cuBLAS, cuFFT, cuSOLVER, cuSPARSE, cuDNN, NCCL) by soname once a
    # device exists, which :func:`by_soname` does here for every wheel library.
    import tensorflow as tf
    info = dict(tf.sysconfig.get_build_info())
    return {"gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "arch_flags": " ".join(info.get("cuda_compute_capabilities") or []),
            "cuda_built": str(info.get("cuda_version")), "cudnn_built": str(info.get("cudnn_version"))}


def _drive_xgboost() -> dict:
    # Training with device="cuda" (XGBoost's CUDA runtime is static; it opens libcuda.so.1 itself).
    import numpy as np
    import xgboost as xgb
    x = np.random.default_rng(0).random((64, 4))
    booster = xgb.train({"device": "cuda", "tree_method": "hist"}, xgb.DMatrix(x, label=x[:, 0] > 0.5), 2)
    info = xgb.build_info()
    return {"device": json.loads(booster.save_config())["learner"]["generic_param"]["device"],
            "cuda_built": ".".join(map(str, info.get("CUDA_VERSION") or [])),
            "nccl_built": ".".join(map(str, info.get("NCCL_VERSION") or []))}


DRIVERS = {"onnxruntime": _drive_onnxruntime, "pytorch": _drive_pytorch, "tensorflow": _drive_tensorflow,
           "xgboost": _drive_xgboost}

#: The libraries whose version :func:`library_versions` reads: (glob of the file name, version call).
VERSIONED = {"cudart": ("libcudart.so.*", "cudaRuntimeGetVersion"), "cudnn": ("libcudnn.so.*", "cudnnGetVersion"),
             "nccl": ("libnccl.so.*", "ncclGetVersion")}


def library_versions(paths: list[str]) -> dict[str, str]:
    """``{"cudart"|"cudnn"|"nccl": "major.minor[.patch]"}`` of those of ``paths`` (wheel libraries)
    that are the CUDA runtime, cuDNN or NCCL, each opened by its file name through the loader's own
    search (one the loader cannot find is not read) and asked its version (:data:`VERSIONED`; none
    of these calls needs a driver). Raises ValueError for a version call's answer that is none."""
    out = {}
    for kind, (pattern, call) in VERSIONED.items():
        for path in (p for p in paths if fnmatch.fnmatch(os.path.basename(p), pattern)):
            try:
                lib = ctypes.CDLL(os.path.basename(path))
            except OSError:
                continue
            if kind == "cudnn":
                getattr(lib, call).restype = ctypes.c_size_t
                code = getattr(lib, call)()
            else:
                value = ctypes.c_int(0)
                getattr(lib, call)(ctypes.byref(value))
                code = value.value
            out[kind] = decode_version(kind, int(code))
            break
    return out


def _child(framework: str, log_prefix: str) -> None:
    # In the child: drive the framework, then read the loader's log of this very process. A name the
    # log shows unmapped that dlopen now opens was mapped under another name (the same file): not missing.
    result: dict = {"framework": framework}
    try:
        result.update(DRIVERS[framework]())
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    with open(f"{log_prefix}.{os.getpid()}", errors="replace") as f:
        asked, mapped = parse_loader_log(f.read())
    result["missing"] = [n for n in unmapped(asked, mapped) if not _opens(n)]
    print("GPU_READY " + json.dumps(result))


def _opens(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def drive(framework: str, source: str, timeout: float = 600) -> dict:
    """Run ``framework``'s GPU code path (:data:`DRIVERS`) in a child Python that runs ``source``
    (this module's text) under ``LD_DEBUG=files``. Returns ``{"missing": [libraries the loader was
    asked for and could not find], "messages": the child's stderr (its last 20,000 characters),
    "error": the framework's exception, if any}`` and what the framework reported
    (providers, arch flags, the versions it was built with). Raises RuntimeError when the child
    printed no result, subprocess.TimeoutExpired after ``timeout`` seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "ld")
        env = {**os.environ, "LD_DEBUG": "files", "LD_DEBUG_OUTPUT": prefix, "TF_CPP_MIN_LOG_LEVEL": "0"}
        code = f"{source}\n_child({framework!r}, {prefix!r})\n"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, errors="replace",
                           env=env, timeout=timeout)
    found = [line for line in r.stdout.splitlines() if line.startswith("GPU_READY ")]
    if not found:
        raise RuntimeError(f"the {framework} probe printed no result (exit {r.returncode}):\n{r.stderr[-4000:]}")
    result = json.loads(found[-1][len("GPU_READY "):])
    result["messages"] = r.stderr[-20000:]
    return result


def report(framework: str, source: str) -> dict:
    """Everything the smoke tests check, as JSON-ready data: :func:`drive`'s result, ``closure``
    (:func:`closure` over :func:`roots`), ``roots`` (how many files it read), and, in this process,
    which has loaded no framework (so nothing is open already), ``by_soname``
    (:func:`by_soname` over :func:`wheel_libraries`) and ``versions`` (:func:`library_versions`)."""
    paths, libraries = roots(framework), wheel_libraries()
    return {"by_soname": by_soname(libraries), "versions": library_versions(libraries),
            **drive(framework, source), "closure": closure(paths), "roots": len(paths)}
