"""Prometheus's HTTP API, instant queries only (`POST /api/v1/query`), on the daemon's
shared aiohttp session.

Three ways a query fails, kept apart because remedyd treats them differently: the
server cannot be reached or is not serving (connection refused, a timeout, a 5xx: a
Prometheus starting up answers 503), the query itself is wrong (400/422 with
Prometheus's errorType and error), and an answer that is not the API's (not JSON, or
not its shape: a proxy's page, a wrong URL). Configured headers (credentials) are sent
with every request and never appear in a message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from daemon.clients.http import HttpClient, HttpError

ResultType = Literal["vector", "scalar"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of an instant vector (a scalar: no labels). `value` is Prometheus's own:
    NaN and +-Inf as it encodes them ("NaN", "+Inf", "-Inf")."""

    labels: Mapping[str, str]
    value: float
    # The evaluation time Prometheus stamped it with (Unix seconds).
    at: float

    @property
    def is_nan(self) -> bool:
        return math.isnan(self.value)


@dataclass(frozen=True, slots=True)
class QueryResult:
    result_type: ResultType
    samples: tuple[Sample, ...]
    warnings: tuple[str, ...] = field(default=())


class PrometheusError(Exception):
    """A query that produced no answer; `state` is how the KPI source reports it."""

    state: ClassVar[str] = "error"


class PrometheusUnreachable(PrometheusError):
    """Not reached, no answer in time, or not serving (5xx)."""

    state = "unreachable"


class PrometheusQueryError(PrometheusError):
    """Prometheus refused the query (400 bad_data, 422 execution) or it returns something
    an instant check cannot use (a range vector, a string)."""

    def __init__(self, message: str, error_type: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type


class PrometheusBadResponse(PrometheusError):
    """An answer that is not Prometheus's API: not JSON, or not its shape."""


class PrometheusClient:
    def __init__(self, http: HttpClient, url: str, headers: Mapping[str, str] | None = None,
                 timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self._endpoint = urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/api/v1/query"))
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._http = http
        # Where it points, for messages and status: no user info, no query string.
        self.peer = peer_of(url)

    async def query(self, promql: str, at: float | None = None) -> QueryResult:
        """Evaluate `promql` at `at` (Unix seconds; None: Prometheus's now)."""
        form = {"query": promql, "timeout": f"{self._timeout:g}s"}
        if at is not None:
            form["time"] = f"{at:.3f}"
        try:
            session = self._http.session
            async with session.post(self._endpoint, data=form, headers=self._headers,
                                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                                    allow_redirects=False) as response:
                status = response.status
                body = await response.read()
        except TimeoutError as exc:
            raise PrometheusUnreachable(
                f"Prometheus at {self.peer} did not answer within {self._timeout:g}s") from exc
        except (aiohttp.ClientError, OSError, HttpError) as exc:
            detail = str(exc) or type(exc).__name__
            raise PrometheusUnreachable(f"Prometheus at {self.peer}: {detail}") from exc
        except ValueError as exc:  # aiohttp refusing the request as configured
            raise PrometheusError(f"a query to {self.peer} cannot be sent: {exc}") from exc
        return self._parse(status, body)

    def _parse(self, status: int, body: bytes) -> QueryResult:
        document = _json_or_none(body)
        if status >= 500:
            raise PrometheusUnreachable(
                f"Prometheus at {self.peer} answered {status}{_said(document, body)}")
        if status in (400, 422) and isinstance(document, dict) and (
                document.get("status") == "error"):
            error_type = str(document.get("errorType") or "")
            raise PrometheusQueryError(
                f"Prometheus refused the query ({status} {error_type}): "
                f"{document.get('error') or 'no reason given'}", error_type)
        if status != 200:
            raise PrometheusBadResponse(
                f"Prometheus at {self.peer} answered {status}{_said(document, body)}")
        if not isinstance(document, dict):
            raise PrometheusBadResponse(f"{self.peer}: the answer is not Prometheus's JSON "
                                        f"({_snippet(body)})")
        try:
            return _result(document)
        except PrometheusQueryError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise PrometheusBadResponse(
                f"{self.peer}: not the shape of an instant query's answer ({exc})") from None


def peer_of(url: str) -> str:
    """`url` without user info (credentials may sit there), query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _result(document: Mapping[str, Any]) -> QueryResult:
    if document["status"] != "success":
        raise ValueError(f"status {document['status']!r}")
    data = document["data"]
    kind = data["resultType"]
    raw = data["result"]
    warnings = tuple(str(w) for w in document.get("warnings") or ())
    if kind == "vector":
        if not isinstance(raw, list):
            raise TypeError("result is not a list")
        samples = tuple(_sample(item["metric"], item["value"]) for item in raw)
        return QueryResult("vector", samples, warnings)
    if kind == "scalar":
        return QueryResult("scalar", (_sample({}, raw),), warnings)
    if kind in ("matrix", "string"):
        raise PrometheusQueryError(
            f"the query returns a {kind}; an instant check needs an instant vector or a "
            "scalar (drop the range selector, or wrap it in a function such as rate())",
            "unsupported_result")
    raise ValueError(f"unknown resultType {kind!r}")


def _sample(metric: Any, value: Any) -> Sample:
    if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
        raise TypeError("a sample is {metric: {...}, value: [time, \"value\"]}")
    at, text = value
    if not isinstance(text, str) or isinstance(at, bool) or not isinstance(at, int | float):
        raise TypeError(f"a sample value is [time, \"value\"], got {value!r}")
    return Sample({str(k): str(v) for k, v in metric.items()}, float(text), float(at))


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _said(document: Any, body: bytes) -> str:
    if isinstance(document, dict) and document.get("error"):
        return f": {document.get('errorType') or 'error'}: {document['error']}"
    return f" ({_snippet(body)})" if body.strip() else ""


def _snippet(body: bytes, limit: int = 120) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
