"""Every HTTP binding of the public contracts (google.api.http) has its edge routes in Envoy.

deploy/envoy/envoy.yaml lists, per public path, the methods the edge lets through to the
transcoder (anything else is a 405 or 404 there). A binding added to a proto without its route
would be refused at the edge; this walks every binding and matches it against the routes the way
Envoy does (first match wins: path, prefix or full-regex safe_regex, plus :method headers).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2, http_pb2

from hybridinference.gateway.v1 import admin_pb2, console_pb2, gateway_pb2
from hybridinference.openai.v1 import openai_pb2
from support.procs import REPO

CONTRACTS = (gateway_pb2, admin_pb2, console_pb2, openai_pb2)
VERBS = ("get", "put", "post", "delete", "patch")


def _bindings(rule: http_pb2.HttpRule) -> Iterator[tuple[str, str]]:
    for verb in VERBS:
        template = getattr(rule, verb)
        if template:
            yield verb.upper(), template
    for extra in rule.additional_bindings:
        yield from _bindings(extra)


def _example_path(template: str) -> str:
    """A concrete path for a template: each {var} or {var=**} becomes a sample segment."""
    return re.sub(r"\{[^}]*\}", "sample-1", template)


def bindings() -> list[tuple[str, str, str]]:
    found = []
    for module in CONTRACTS:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if options.HasExtension(annotations_pb2.http):
                    for verb, template in _bindings(options.Extensions[annotations_pb2.http]):
                        found.append((f"{service.name}.{method.name}", verb, template))
    return found


def _routes() -> list[dict[str, Any]]:
    config = yaml.safe_load((REPO / "deploy" / "envoy" / "envoy.yaml").read_text())
    listener = config["static_resources"]["listeners"][0]
    (chain,) = listener["filter_chains"]
    hcm = chain["filters"][0]["typed_config"]
    (host,) = hcm["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = host["routes"]
    return routes


def _matches(route: dict[str, Any], method: str, path: str) -> bool:
    match = route["match"]
    if match.get("grpc") is not None:
        return False  # an HTTP/JSON request carries no gRPC content type
    if "path" in match and match["path"] != path:
        return False
    if "prefix" in match and not path.startswith(match["prefix"]):
        return False
    if "safe_regex" in match and not re.fullmatch(match["safe_regex"]["regex"], path):
        return False
    for header in match.get("headers", []):
        if header["name"] == ":method" and header["string_match"]["exact"] != method:
            return False
    return True


def first_route(method: str, path: str) -> dict[str, Any]:
    return next(route for route in _routes() if _matches(route, method, path))


@pytest.mark.parametrize(("rpc", "verb", "template"), bindings())
def test_the_binding_reaches_the_transcoder(rpc: str, verb: str, template: str) -> None:
    """Its method on its path meets the route that hands the request to the transcoder."""
    route = first_route(verb, _example_path(template))
    # The allowed-method routes answer 400 only for a request the transcoder could not map.
    assert route.get("direct_response", {}).get("status") == 400, (rpc, verb, template, route)


@pytest.mark.parametrize(("rpc", "verb", "template"), bindings())
def test_another_method_on_the_path_is_405_naming_the_allowed_ones(
    rpc: str, verb: str, template: str
) -> None:
    path = _example_path(template)
    allowed = {v for _, v, t in bindings() if _example_path(t) == path}
    other = "DELETE" if "DELETE" not in allowed else "PATCH"
    route = first_route(other, path)
    assert route["direct_response"]["status"] == 405, (rpc, route)
    (allow,) = [h["header"]["value"] for h in route["response_headers_to_add"]]
    assert set(allow.replace(" ", "").split(",")) == allowed
