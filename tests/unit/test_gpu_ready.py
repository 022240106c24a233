"""builder.run.gpu_ready's pure logic (what runs inside a GPU image: reading ldd's output and the
loader's LD_DEBUG=files log, classifying what is missing, decoding library versions), on text shaped
like what glibc 2.36 (Debian 12) prints. The in-image parts run in the smoke tests (tests/by_image/gpu)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from builder.run import gpu_ready as g

# ldd on ONNX Runtime's CUDA provider in the published image, before the fix (measured on Debian 12).
LDD_BEFORE = """\
\tlinux-vdso.so.1 (0x00007ffd5a7e2000)
\tlibcublasLt.so.13 => not found
\tlibcublas.so.13 => not found
\tlibcurand.so.10 => not found
\tlibcudart.so.13 => not found
\tlibcuda.so.1 => not found
\tlibdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007f28311b0000)
\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f2830e00000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2830c1f000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f28311cc000)
"""

# LD_DEBUG=files lines (pid, tab, message) as glibc prints them.
LOG = """\
     22526:\tfile=libgomp-e985bcbb.so.1.0.0 [0];  needed by /venv/sklearn/_openmp.so [0]
     22526:\tfile=libgomp-e985bcbb.so.1.0.0 [0];  generating link map
     22526:\t  dynamic: 0x00007f3541ffd000  base: 0x00007f3541e00000   size: 0x0000000000205f40
     22526:\tfile=libcublasLt.so.13 [0];  needed by /venv/onnxruntime/capi/libonnxruntime_providers_cuda.so [0]
     22526:\tfile=libcuda.so.1 [0];  dynamically loaded by /venv/xgboost/lib/libxgboost.so [0]
     22526:\tfile=libcudnn_graph.so.9.20.0 [0];  dynamically loaded by /venv/nvidia/cudnn/lib/libcudnn.so.9 [0]
     22526:\tfile=libcudnn_graph.so.9.20 [0];  dynamically loaded by /venv/nvidia/cudnn/lib/libcudnn.so.9 [0]
     22526:\tfile=libcudnn_graph.so.9 [0];  dynamically loaded by /venv/nvidia/cudnn/lib/libcudnn.so.9 [0]
     22526:\tfile=libcudnn_graph.so.9 [0];  generating link map
"""


def test_ldd_output_gives_each_soname_and_where_it_resolved():
    got = g.parse_ldd(LDD_BEFORE)
    assert got["libc.so.6"] == "/lib/x86_64-linux-gnu/libc.so.6"
    assert sorted(n for n, p in got.items() if p is None) == [
        "libcublas.so.13", "libcublasLt.so.13", "libcuda.so.1", "libcudart.so.13", "libcurand.so.10"]
    assert "linux-vdso.so.1" not in got and "/lib64/ld-linux-x86-64.so.2" not in got


def test_ldd_of_a_file_that_is_not_dynamic_is_empty():
    assert g.parse_ldd("\tnot a dynamic executable\n") == {}
    assert g.parse_ldd("\tstatically linked\n") == {}


@pytest.mark.parametrize("text", ["\tlibfoo.so.1 => /x/libfoo.so.1; rm -rf / (0x0)\n", "garbage here\n",
                                  "\tlib$(id).so => not found\n"])
def test_ldd_output_of_another_shape_is_refused(text):
    with pytest.raises(ValueError):
        g.parse_ldd(text)


def test_the_loader_log_gives_what_was_asked_for_and_what_was_mapped():
    asked, mapped = g.parse_loader_log(LOG)
    assert "libcublasLt.so.13" in asked and "libcublasLt.so.13" not in mapped
    assert mapped == {"libgomp-e985bcbb.so.1.0.0", "libcudnn_graph.so.9"}


def test_unmapped_leaves_out_a_longer_version_found_under_its_soname():
    # cuDNN asks for libcudnn_graph.so.9.20.0, then .9.20, then .9: only the last one is found
    assert g.unmapped(*g.parse_loader_log(LOG)) == ["libcublasLt.so.13", "libcuda.so.1"]


def test_superseded_needs_the_same_library_and_a_shorter_prefix_version():
    assert g.superseded("libcudnn_graph.so.9.20.0", {"libcudnn_graph.so.9"})
    assert not g.superseded("libcudnn_graph.so.9", {"libcudnn_graph.so.9"})  # same name: no
    assert not g.superseded("libcudnn_graph.so.9.20", {"libcudnn_ops.so.9"})  # another library
    assert not g.superseded("libcublas.so.13", {"libcublas.so.12"})  # another major
    assert not g.superseded("libcublas.so", {"libcublas.so.12"})  # no version to supersede


def test_a_bad_name_in_the_loader_log_is_refused():
    with pytest.raises(ValueError):
        g.parse_loader_log("  1:\tfile=lib`x`.so [0];  needed by /a [0]\n")


def test_only_the_drivers_libraries_may_be_missing():
    assert g.not_the_drivers(["libcuda.so.1", "/usr/lib/libnvidia-ml.so.1", "libcublasLt.so.13"]) == [
        "libcublasLt.so.13"]
    assert g.not_the_drivers(["libcuda.so.1", "libnvidia-ml.so.1"]) == []


def test_frameworks_messages_name_the_library_dlopen_could_not_open():
    ort = ("[E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] ... Failed to load library "
           "/opt/venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so with error: "
           "libcublasLt.so.13: cannot open shared object file: No such file or directory")
    assert g.missing_in_messages(ort) == ["libcublasLt.so.13"]
    assert g.missing_in_messages("all good") == []


@pytest.mark.parametrize("text, expected", [
    ("RuntimeError: Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU", True),
    ("E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: UNKNOWN ERROR (303)", True),
    ("WARNING: src/context.cc:53: No visible GPU is found, setting device to CPU.", True),
    ("libcublasLt.so.13: cannot open shared object file: No such file or directory", False),
    ("CUDA out of memory", False),
])
def test_no_driver_recognizes_each_frameworks_words(text, expected):
    assert g.no_driver(text) is expected


def test_closure_findings_allow_only_the_driver_and_a_plugins_own_network_stack():
    found = {"/v/nvidia/nvshmem/lib/nvshmem_transport_ucx.so.3": ["libucp.so.0", "libucs.so.0"],
             "/v/nvidia/cu13/lib/libcufile_rdma.so.1": ["libcufile.so.0", "libibverbs.so.1"],
             "/v/onnxruntime/capi/libonnxruntime_providers_cuda.so": ["libcuda.so.1", "libcublasLt.so.13"],
             "/v/nvidia/cudnn/lib/libcudnn_engines_runtime_compiled.so.9": ["libcuda.so.1"],
             "/v/nvidia/cu13/lib/libcusolverMg.so.12": ["libucp.so.0"]}  # not a plugin: UCX is not its to miss
    assert g.unexpected(found) == {
        "/v/nvidia/cu13/lib/libcufile_rdma.so.1": ["libcufile.so.0"],
        "/v/onnxruntime/capi/libonnxruntime_providers_cuda.so": ["libcublasLt.so.13"],
        "/v/nvidia/cu13/lib/libcusolverMg.so.12": ["libucp.so.0"]}


@pytest.mark.parametrize("kind, code, expected", [
    ("cudart", 13050, "13.5"), ("cudart", 12090, "12.9"), ("cudart", 13000, "13.0"),
    ("cudnn", 92801, "9.28.1"), ("cudnn", 92000, "9.20.0"), ("cudnn", 8907, "8.9.7"),
    ("nccl", 23203, "2.32.3"), ("nccl", 22907, "2.29.7"), ("nccl", 2804, "2.8.4"),
])
def test_library_version_codes_decode(kind, code, expected):
    assert g.decode_version(kind, code) == expected


@pytest.mark.parametrize("kind, code", [("cudart", 0), ("cudnn", -1), ("cublas", 12000)])
def test_a_version_code_that_is_none_is_refused(kind, code):
    with pytest.raises(ValueError):
        g.decode_version(kind, code)


def test_the_module_imports_the_standard_library_only():
    # it runs inside the images, where only the standard library and the framework are
    tree = ast.parse(Path(g.__file__).read_text())
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert top <= set(sys.stdlib_module_names) | {"__future__"}, top - set(sys.stdlib_module_names)


def test_closure_reads_ldd_for_every_root(tmp_path):
    # a stand-in ldd: prints one missing library named after the file, so each root is read once
    fake = tmp_path / "ldd"
    fake.write_text("#!/bin/sh\nprintf '\\tlib%s.so.1 => not found\\n\\tlibc.so.6 => /lib/libc.so.6 (0x1)\\n' "
                    "\"$(basename \"$1\")\"\n")
    fake.chmod(0o755)
    got = g.closure([str(tmp_path / "a"), str(tmp_path / "b")], ldd=str(fake))
    assert got == {str(tmp_path / "a"): ["liba.so.1"], str(tmp_path / "b"): ["libb.so.1"]}


def test_the_real_ldd_resolves_pythons_own_closure():
    # this machine's loader on its own Python: everything found (the same reading the images get)
    ldd = subprocess.run(["ldd", sys.executable], capture_output=True, text=True)
    if ldd.returncode != 0:
        pytest.skip("the interpreter is not dynamically linked here")
    got = g.parse_ldd(ldd.stdout)
    assert got and all(p is not None for p in got.values())


def test_roots_are_the_wheels_libraries_and_the_frameworks_own(tmp_path):
    for rel in ("nvidia/cu13/lib/libcublasLt.so.13", "nvidia/nccl/lib/libnccl.so.2", "nvidia/nccl/__init__.py",
                "onnxruntime/capi/libonnxruntime_providers_cuda.so", "onnxruntime/capi/__init__.py",
                "torch/lib/libtorch_cuda.so"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    got = [Path(p).relative_to(tmp_path).as_posix() for p in g.roots("onnxruntime", str(tmp_path))]
    assert got == ["nvidia/cu13/lib/libcublasLt.so.13", "nvidia/nccl/lib/libnccl.so.2",
                   "onnxruntime/capi/libonnxruntime_providers_cuda.so"]
