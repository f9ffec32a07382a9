"""A small Kubernetes REST client for the cluster test: requests and watches over HTTPS with the
credentials of a kubeconfig (client certificates or a bearer token), JSON in and out.

The tests drive the cluster with kubectl and Helm as a person would; this client serves the pod
runner (the test's kubelet) and the checks that read many objects at once."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import tempfile
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode, urlparse

import yaml


class ApiError(Exception):
    """A non-2xx answer: the HTTP status and the body the server sent."""

    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def _material(entry: dict, key: str, tmp: Path) -> str | None:
    """A kubeconfig file field (`key`) or its inline `key-data`, as a file path."""
    if entry.get(key):
        return entry[key]
    data = entry.get(f"{key}-data")
    if not data:
        return None
    path = tmp / key
    path.write_bytes(base64.b64decode(data))
    return str(path)


class Kube:
    """A client for the current context of `kubeconfig`."""

    def __init__(self, kubeconfig: str | Path):
        config = yaml.safe_load(Path(kubeconfig).read_text())
        context_name = config["current-context"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        self._tmp = Path(tempfile.mkdtemp(prefix="hearth-kube-"))
        server = urlparse(cluster["server"])
        self.host, self.port = server.hostname, server.port or 443
        self.ssl = ssl.create_default_context(cafile=_material(cluster, "certificate-authority", self._tmp))
        cert = _material(user, "client-certificate", self._tmp)
        if cert:
            self.ssl.load_cert_chain(cert, _material(user, "client-key", self._tmp))
        self.token = user.get("token")

    def _connection(self, timeout: float | None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ssl, timeout=timeout)

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: dict | None = None,
        timeout: float = 30,
    ) -> dict:
        """One request; the decoded JSON answer. Raises ApiError on a non-2xx status."""
        if query:
            path = f"{path}?{urlencode(query)}"
        payload = None if body is None else json.dumps(body).encode()
        connection = self._connection(timeout)
        try:
            connection.request(method, path, body=payload, headers=self._headers(content_type if payload else None))
            response = connection.getresponse()
            data = response.read().decode()
        finally:
            connection.close()
        if not 200 <= response.status < 300:
            raise ApiError(response.status, data)
        return json.loads(data) if data else {}

    def get(self, path: str, **query) -> dict:
        return self.request("GET", path, query=query or None)

    def get_opt(self, path: str) -> dict | None:
        """The object at `path`, or None when the server answers 404."""
        try:
            return self.get(path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def merge_patch(self, path: str, body: dict) -> dict:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 240) -> Iterator[dict]:
        """Watch events (`{"type", "object"}`) of the collection at `path` from `resource_version`,
        until the server closes the stream."""
        query = urlencode(
            {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
             "timeoutSeconds": str(timeout_seconds)}
        )
        connection = self._connection(timeout_seconds + 30)
        try:
            connection.request("GET", f"{path}?{query}", headers=self._headers(None))
            response = connection.getresponse()
            if response.status != 200:
                raise ApiError(response.status, response.read().decode())
            while True:
                line = response.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            connection.close()
