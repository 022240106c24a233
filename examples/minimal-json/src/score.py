"""A rule-based iris model for the minimal image (no ML framework): the threshold comes from a file
written by the example's extraDockerfileSteps, and tabulate from the conda file's pip section."""

import json

from tabulate import tabulate

limit = None


def init():
    global limit
    with open("/var/lib/iris-rules/rules.env") as f:
        limit = float(f.read().strip().split("=", 1)[1])


def run(raw_data):
    rows = json.loads(raw_data)["data"]
    labels = ["setosa" if row[2] <= limit else "not-setosa" for row in rows]
    return {"class": labels, "table": tabulate([[*r, c] for r, c in zip(rows, labels)])}
