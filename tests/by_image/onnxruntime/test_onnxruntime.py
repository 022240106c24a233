"""ONNX Runtime images serve an ONNX model whose expected output the same runtime computed."""


def test_score_returns_the_in_process_predictions(model_server, assert_close):
    server, expected = model_server
    r = server.score({"data": expected["input"]})
    assert r.status_code == 200, r.text
    assert_close(r.json(), expected["output"], rtol=1e-6, atol=1e-7)
