"""The serving contract every image keeps (children run these tests too): liveness, scoring through
the entry script, an OpenAPI document, and a non-root serving process."""

import requests


def test_liveness_route_answers_healthy(model_server):
    server, _ = model_server
    r = requests.get(f"{server.url}/", timeout=60 * server.slowdown)
    assert r.status_code == 200
    assert "healthy" in r.text.lower()


def test_score_route_runs_the_entry_script(model_server):
    server, _ = model_server
    r = server.score({"data": [[1, 2, 3], [10, 9, 8.5]]})
    assert r.status_code == 200, r.text
    assert r.json() == {"sum": [6, 27.5]}


def test_swagger_document_parses(model_server):
    server, _ = model_server
    r = requests.get(f"{server.url}/swagger.json", timeout=60 * server.slowdown)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert "paths" in doc and "/score" in doc["paths"]


def test_serving_processes_are_not_root(model_server, processes_uids):
    server, _ = model_server
    uids = processes_uids(server.container)
    assert uids, "no process found in the container"
    assert 0 not in uids, f"a process runs as root: uids {uids}"
