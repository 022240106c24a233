"""Model-free entry script for the minimal image: returns the sum of each row it is sent."""

import json
import logging


def init():
    logging.info("minimal smoke-test entry script ready")


def run(raw_data):
    rows = json.loads(raw_data)["data"]
    return {"sum": [sum(row) for row in rows]}
