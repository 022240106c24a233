"""Local serving takes where it mounts the app and the model, and the server's port, from the
matrix's ``runtime`` only (``builder serve``, its Compose file and the smoke tests alike)."""

from pathlib import Path

from builder import matrix
from builder.extend import deploy


def _runtime(tmp_path, small_matrix_data, dump_yaml, **changed):
    (tmp_path / "compat.yaml").write_text((Path(__file__).parents[1] / "fixtures" / "compat.yaml").read_text())
    small_matrix_data["runtime"].update(changed)
    (tmp_path / "m.yaml").write_text(dump_yaml(small_matrix_data))
    return matrix.load(tmp_path / "m.yaml")


def test_the_model_and_app_are_mounted_where_the_runtime_says(tmp_path, small_matrix_data, dump_yaml):
    rt = _runtime(tmp_path, small_matrix_data, dump_yaml, model_mount="/srv/models", app_root="/srv/app").data.runtime
    (tmp_path / "model.pkl").write_bytes(b"")
    (tmp_path / "score.py").write_text("")
    volumes, env = deploy.mounts(tmp_path / "model.pkl", tmp_path / "score.py", rt)
    assert volumes[str(tmp_path)] == {"bind": "/srv/app", "mode": "ro"}
    assert volumes[str(tmp_path / "model.pkl")] == {"bind": "/srv/models/model.pkl", "mode": "ro"}
    assert env["AZUREML_MODEL_DIR"] == "/srv/models"
    service = deploy.compose_service("img", tmp_path, tmp_path, port=rt.port, app_root=rt.app_root, uid=rt.uid,
                                     model_mount=rt.model_mount)
    assert [v["target"] for v in service["volumes"]] == ["/srv/app", "/srv/models"]
    assert service["ports"] == [f"127.0.0.1::{rt.port}"]


def test_the_model_mount_is_not_part_of_any_image(tmp_path, small_matrix_data, dump_yaml):
    before = {s.name: s.cell_digest for s in _runtime(tmp_path, small_matrix_data, dump_yaml).images()}
    after = _runtime(tmp_path, small_matrix_data, dump_yaml, model_mount="/srv/models").images()
    assert {s.name: s.cell_digest for s in after} == before
