"""XGBoost's GPU build: compiled with CUDA of the table's major version, with NCCL."""

import json


def test_xgboost_is_a_cuda_build_of_the_tables_cuda_major(run_python, expected):
    info = json.loads(run_python("import json, xgboost; print(json.dumps(xgboost.build_info(), default=str))"))
    assert info["USE_CUDA"] is True
    assert str(info["CUDA_VERSION"][0]) == expected["cuda"].split(".")[0]
    assert info["USE_NCCL"] is True
