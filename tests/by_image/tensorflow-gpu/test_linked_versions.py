"""What TensorFlow's CUDA build was built against, against compat.yaml (TensorFlow reports the CUDA
it was compiled with; the table records the runtime wheels it resolves to: the majors must agree)."""

import json


def test_tensorflow_is_a_cuda_build_of_the_tables_cuda_major(run_python, expected):
    info = json.loads(run_python(
        "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; import json, tensorflow as tf; "
        "print(json.dumps(dict(tf.sysconfig.get_build_info())))"))
    assert info["is_cuda_build"] is True
    assert info["cuda_version"].split(".")[0] == expected["cuda"].split(".")[0]
    assert str(info["cudnn_version"]).split(".")[0] == expected["cudnn"].split(".")[0]
