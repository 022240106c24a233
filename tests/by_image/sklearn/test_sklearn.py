"""scikit-learn images serve a pipeline trained in the same image and publish its schema."""

import requests


def test_score_returns_the_in_process_probabilities(model_server, assert_close):
    server, expected = model_server
    r = server.score({"data": expected["input"]})
    assert r.status_code == 200, r.text
    assert_close(r.json(), expected["output"], rtol=1e-6, atol=1e-9)


def test_swagger_carries_the_input_schema(model_server):
    server, _ = model_server
    doc = requests.get(f"{server.url}/swagger.json", timeout=60 * server.slowdown).json()
    body = doc["paths"]["/score"]["post"]["parameters"][0]["schema"]["$ref"]
    assert body == "#/definitions/ServiceInput", doc["paths"]["/score"]
    data = doc["definitions"]["ServiceInput"]["properties"]["data"]  # run(data): a 2-D array of numbers
    assert (data["type"], data["items"]["type"], data["items"]["items"]["type"]) == ("array", "array", "number"), data
    out = doc["definitions"]["ServiceOutput"]  # predict_proba: one row of probabilities per input row
    assert (out["type"], out["items"]["type"], out["items"]["items"]["type"]) == ("array", "array", "number"), out
