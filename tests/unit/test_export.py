"""The reproducible export: buildx's standard output streams into ``docker load`` while its progress
goes line by line to the log, and a refused load never leaves buildx blocked on a full pipe. A real
child process stands in for buildx; a fake Engine API takes the stream."""

import sys
import threading
from pathlib import Path

import docker
import pytest

from builder.engine import export

# Writes two progress lines to stderr and ``n`` bytes (more than a pipe holds) to stdout, then exits ``code``.
_FAKE_BUILDX = ("import sys; n, code = int(sys.argv[1]), int(sys.argv[2]); sys.stderr.write('#1 [1/2] FROM scratch\\n'); "
                "sys.stderr.flush(); sys.stdout.buffer.write(b'x' * n); sys.stdout.flush(); "
                "sys.stderr.write('#2 DONE 0.1s\\n'); sys.exit(code)")


class _Api:
    def __init__(self, fail_after: int | None = None, said: list | None = None):
        self.received, self.fail_after, self.said = 0, fail_after, said or [{"stream": "Loaded image"}]

    def load_image(self, data):
        for chunk in data:
            self.received += len(chunk)
            if self.fail_after is not None and self.received >= self.fail_after:
                raise docker.errors.APIError("refused", explanation="unexpected EOF in layer")
        return iter(self.said)


class _Client:
    def __init__(self, api: _Api):
        self.api = api


def _run(n: int, code: int = 0, load_into=None) -> tuple[export.Exported, list[str]]:
    lines: list[str] = []
    done: list = []
    worker = threading.Thread(target=lambda: done.append(export.run(
        [sys.executable, "-c", _FAKE_BUILDX, str(n), str(code)], Path.cwd(), {}, lines.append, load_into)))
    worker.start()
    worker.join(timeout=120)  # bounded: a blocked pipe would hang here, not pass
    assert not worker.is_alive(), "export.run did not return: buildx blocked on its standard output"
    return done[0], lines


def test_the_archive_streams_into_the_engine_and_the_progress_into_the_log():
    api = _Api()
    done, lines = _run(3 * export.CHUNK + 17, load_into=_Client(api))
    assert done == export.Exported(0, None)
    assert api.received == 3 * export.CHUNK + 17
    assert lines == ["#1 [1/2] FROM scratch", "#2 DONE 0.1s"]


def test_a_refused_load_is_said_and_buildx_still_runs_to_its_end():
    api = _Api(fail_after=1)
    done, lines = _run(8 * export.CHUNK, load_into=_Client(api))
    assert done.code == 0 and done.load_error == "unexpected EOF in layer"
    assert lines[-1] == "#2 DONE 0.1s"  # buildx was never left blocked on a full pipe


def test_an_error_in_the_engines_answer_is_the_load_error():
    done, _ = _run(10, load_into=_Client(_Api(said=[{"stream": "x"}, {"error": "invalid  tar\nheader"}])))
    assert done.load_error == "invalid tar header"


def test_a_failed_build_keeps_its_exit_code():
    done, _ = _run(0, code=3, load_into=_Client(_Api()))
    assert done.code == 3


def test_without_loading_standard_output_joins_the_progress():
    done, lines = _run(5)
    assert done == export.Exported(0, None)
    assert lines == ["#1 [1/2] FROM scratch", "xxxxx#2 DONE 0.1s"]


@pytest.mark.parametrize("ref", ["r:t,dest=/etc/passwd", 'r:"t', "r:t\nx", "r=t"])
def test_a_reference_the_output_csv_cannot_carry_is_refused(ref):
    with pytest.raises(ValueError, match="output specification"):
        export.output(ref, True)


def test_the_output_by_image_store():
    assert export.output("127.0.0.1:5000/m:build-1", True) == \
        "type=oci,dest=-,name=127.0.0.1:5000/m:build-1,rewrite-timestamp=true"
    assert export.output("127.0.0.1:5000/m:build-1", False) == "type=image,name=127.0.0.1:5000/m:build-1"


def test_a_build_that_exported_nothing_loads_nothing():
    api = _Api()
    done, _ = _run(0, code=1, load_into=_Client(api))
    assert done == export.Exported(1, None) and api.received == 0


def test_buildx_that_cannot_start_is_said_not_raised(tmp_path):
    done = export.run([str(tmp_path / "no-buildx")], tmp_path, {}, print)
    assert done.code == -1 and "no-buildx" in done.start_error


def test_when_the_log_cannot_be_written_buildx_is_stopped_and_the_error_raised():
    # nobody reads buildx's progress any more: left running, it would block on a full pipe forever
    import subprocess

    from builder.engine import children
    started: list = []
    real_start = children.start

    def start(cmd, **kw):
        started.append(real_start(cmd, **kw))
        return started[-1]

    def full_disk(line):
        raise OSError(28, "No space left on device")
    children_start, children.start = children.start, start
    try:
        with pytest.raises(OSError, match="No space"):
            export.run([sys.executable, "-c", "import sys, time\nwhile True: print('#1 x', file=sys.stderr, flush=True); "
                        "time.sleep(0.01)"], Path.cwd(), {}, full_disk, _Client(_Api()))
    finally:
        children.start = children_start
    assert started[0].returncode is not None  # stopped and reaped, not left behind
    assert started[0] not in children._running and started[0].stderr.closed
    assert isinstance(started[0], subprocess.Popen)


def test_zstd_compresses_every_layer_and_gzip_is_buildkits_default():
    ref = "127.0.0.1:5000/m:build-1"
    assert export.output(ref, True, "zstd") == \
        f"type=oci,dest=-,name={ref},rewrite-timestamp=true,compression=zstd,force-compression=true"
    assert export.output(ref, True, "gzip") == export.output(ref, True)  # BuildKit's default: unchanged


@pytest.mark.parametrize("store, compression, words", [
    (False, "zstd", "containerd image store"), (True, "xz", "not one of gzip, zstd"),
    (True, "zstd,force-compression=false", "not one of")])
def test_a_compression_the_store_or_buildkit_cannot_take_is_refused(store, compression, words):
    with pytest.raises(ValueError) as exc:
        export.output("127.0.0.1:5000/m:build-1", store, compression)
    assert words in str(exc.value)


def test_the_uncompressed_size_counts_gzip_zstd_and_plain_layers():
    import gzip
    import io
    import json
    import tarfile
    from types import SimpleNamespace

    import zstandard

    from builder.engine import images
    plain, packed = b"a" * 3000, b"b" * 5000
    zstd = zstandard.ZstdCompressor().compress(packed[:2000]) + zstandard.ZstdCompressor().compress(packed[2000:])
    members = {"blobs/sha256/1": gzip.compress(plain), "blobs/sha256/2": zstd, "blobs/sha256/3": plain,
               "manifest.json": json.dumps([{"Layers": ["blobs/sha256/1", "blobs/sha256/2", "blobs/sha256/3"]}]).encode()}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    saved = out.getvalue()
    client = SimpleNamespace(api=SimpleNamespace(get_image=lambda ref, chunk_size: iter([saved[:700], saved[700:]])))
    assert images.uncompressed_bytes(client, "m:1") == 3000 + 5000 + 3000  # zstd: both frames
