"""HTTP helpers of the serving tests: a deployed application and one request to it (stdlib urllib)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from jobs.config import JobConfig


@dataclass
class Deployed:
    store: str
    url: str
    root: str
    run_dir: str
    config: JobConfig
    keys: dict[str, str]


@dataclass
class Answer:
    status: int
    body: dict
    text: str
    replica: str | None


def call(url: str, key: str | None = None, body: bytes | None = None, timeout: float = 10.0) -> Answer:
    """One HTTP request to the application (GET, or POST with a body); status 0 when no answer came."""
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
            return Answer(response.status, json.loads(text), text, response.headers.get("x-segments-replica"))
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        try:
            body_json = json.loads(text)
        except ValueError:
            body_json = {}
        return Answer(error.code, body_json, text, error.headers.get("x-segments-replica"))
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError) as error:
        # no HTTP answer at all (HAProxy drops the connection of a request a killed replica was serving):
        # status 0, never acknowledged; a test that expects every request to succeed fails on it
        return Answer(0, {"error": "no_answer", "detail": type(error).__name__}, str(error), None)
