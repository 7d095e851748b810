"""A REST API client for tests that checks every answer against the OpenAPI document: the
status code must be one the operation documents, the content type one it documents for that
code, and a JSON body must validate against its schema (jsonschema, 2020-12, the document's
``$ref``s resolved in place). What it saw is recorded, so a test can prove that every
operation was called and answered both a success and an error as documented."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

import requests
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

BASE_URI = "urn:watchkeeper-api"
PREFIX = "/api/v1"


def pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


class Document:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(BASE_URI, resource)
        self.templates = [
            (re.compile("^" + re.sub(r"\{[^}/]+\}", "[^/]+", p) + "$"), p) for p in doc["paths"]
        ]

    def template(self, path: str) -> str:
        rel = path.split("?", 1)[0].removeprefix(PREFIX)
        found = [p for rx, p in self.templates if rx.match(rel)]
        assert found, f"{path}: no such path in the document"
        # the most specific template: fewest parameters
        return min(found, key=lambda p: p.count("{"))

    def operations(self) -> set[tuple[str, str]]:
        return {
            (method.upper(), path)
            for path, item in self.doc["paths"].items()
            for method in item
            if method in ("get", "post", "patch", "delete", "put")
        }

    def validate(self, location: str, value: Any) -> None:
        validator = Draft202012Validator(
            {"$ref": f"{BASE_URI}#{location}"},
            registry=self.registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        assert not errors, f"{location}: {errors[0].message} at {list(errors[0].path)}: {value}"

    def check_response(self, method: str, path: str, response: requests.Response) -> str:
        template = self.template(path)
        operation = self.doc["paths"][template].get(method.lower())
        assert operation is not None, f"{method} {template}: not in the document"
        code = str(response.status_code)
        documented = operation["responses"]
        assert code in documented, f"{method} {path}: {code} undocumented: {response.text[:300]}"
        where = pointer("paths", template, method.lower(), "responses", code)
        answer = documented[code]
        if "$ref" in answer:
            where = answer["$ref"].removeprefix("#")
            answer = self.doc["components"]["responses"][where.rsplit("/", 1)[1]]
        ctype = response.headers.get("content-type", "").split(";")[0].strip()
        content = answer.get("content", {})
        assert ctype in content, f"{method} {path} {code}: content type {ctype!r} undocumented"
        if ctype.endswith("json"):
            self.validate(where + pointer("content", ctype, "schema"), response.json())
        return template

    def check_request(self, method: str, path: str, ctype: str, body: Any) -> None:
        template = self.template(path)
        where = pointer(
            "paths", template, method.lower(), "requestBody", "content", ctype, "schema"
        )
        self.validate(where, body)


class ApiClient:
    """``requests`` against one server, every answer checked by ``Document``."""

    def __init__(self, base: str, token: str = "", document: Document | None = None) -> None:
        self.base, self.token = base, token
        self.session = requests.Session()
        self.document = document or Document(
            requests.get(base + PREFIX + "/openapi.json", timeout=30).json()
        )
        self.seen: dict[tuple[str, str], set[int]] = defaultdict(set)

    def with_token(self, token: str) -> ApiClient:
        other = ApiClient(self.base, token, self.document)
        other.seen = self.seen  # one record for every client of a test
        return other

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        params: Any = None,
        check_request: bool = False,
    ) -> requests.Response:
        sent = dict(headers or {})
        if self.token:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        data: bytes | None = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            sent.setdefault("Content-Type", content_type)
            if check_request and body is not None:
                self.document.check_request(method, path, content_type, body)
        response = self.session.request(
            method, self.base + PREFIX + path, data=data, headers=sent, params=params, timeout=60
        )
        template = self.document.check_response(method, path, response)
        self.seen[(method.upper(), template)].add(response.status_code)
        return response

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.call("POST", path, body, **kw)

    def patch(self, path: str, body: Any, **kw: Any) -> requests.Response:
        return self.call("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.call("DELETE", path, **kw)
