"""scikit-learn images serve a pipeline trained in the same image and publish its schema."""

import requests


def test_score_returns_the_in_process_probabilities(model_server, assert_close):
    server, expected = model_server
    r = server.score({"data": expected["input"]})
    assert r.status_code == 200, r.text
    assert_close(r.json(), expected["output"], rtol=1e-6, atol=1e-9)


def test_swagger_carries_the_input_schema(model_server):
    server, _ = model_server
    doc = requests.get(f"{server.url}/swagger.json", timeout=10).json()
    text = str(doc)
    assert "data" in text and "number" in text, doc
