"""OpenAPI 3.1 for the manager's whole HTTP surface, generated from the code.

Three sources, one document:

* the worker protocol and Shaman: the endpoint catalogue,
  :data:`flamenco_protocol.endpoints.ENDPOINTS` (methods, paths, auth, bodies, every reply);
* the user API: the :class:`~flamenco_manager.web.user_api.ApiRoute` declarations;
* the few routes of neither (login, logout, this document, Shaman's ``/my-info``): below.

Schemas of JSON bodies come from the documents themselves (:func:`document_schema`): each field
declared with :func:`~flamenco_protocol.documents.wire_field` becomes a property under its JSON
key, typed from its annotation; fields without ``omitempty`` are always written, so they are
``required`` in what the manager sends. A test checks that the document and the app's routes
name the same operations.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

import attrs

from flamenco_protocol.documents import (
    TimeOfDay,
    field_key,
    has_strict_keys,
    is_document,
    is_omitempty,
)
from flamenco_protocol.endpoints import ENDPOINTS, Auth, Body, Endpoint
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import JobStatus, TaskStatus, WorkerStatus

from .api_documents import ApiError
from .user_api import ApiReply, ApiRoute

__all__ = ["SchemaRegistry", "document_schema", "extra_operations", "openapi_document"]

OPENAPI_VERSION: Final = "3.1.0"
_OBJECT_ID_PATTERN: Final = "^[0-9a-f]{24}$"
_SECURITY_SCHEMES: Final = {
    "workerBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "A registered worker: its ID and secret.",
    },
    "registrationToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "Only when a registration secret is set: a JWT signed with it (HS256).",
    },
    "userBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A user token (`flamenco-manager token create`), ES256.",
    },
    "userCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "jwtToken",
        "description": "The same token as a cookie (set by `/login`).",
    },
}
_USER_SECURITY: Final[list[dict[str, list[str]]]] = [{"userBearer": []}, {"userCookie": []}]
_STATUS_ENUMS: Final = {
    JobStatus | str: [status.value for status in JobStatus],
    TaskStatus | str: [status.value for status in TaskStatus],
    WorkerStatus | str: [status.value for status in WorkerStatus],
}


class SchemaRegistry:
    """The ``components/schemas`` of a document: one entry per document class used."""

    def __init__(self) -> None:
        self.schemas: dict[str, dict[str, Any]] = {}
        self._classes: dict[str, type] = {}

    def ref(self, cls: type) -> dict[str, Any]:
        """A ``$ref`` to ``cls``'s schema, adding the schema (and those it uses) if new."""
        name = cls.__name__
        known = self._classes.get(name)
        if known is None:
            self._classes[name] = cls
            self.schemas[name] = {}  # Reserve the name first: documents may nest.
            self.schemas[name] = document_schema(cls, self)
        elif known is not cls:
            raise ValueError(f"two documents are called {name}: {known} and {cls}")
        return {"$ref": f"#/components/schemas/{name}"}


def document_schema(cls: type, registry: SchemaRegistry) -> dict[str, Any]:
    """The JSON Schema of a document class, from its fields' keys, types and ``omitempty``."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        key = field_key(field)
        schema = _type_schema(hints[field.name], registry)
        properties[key] = schema
        if not is_omitempty(field):
            required.append(key)
    result: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    if has_strict_keys(cls):
        result["additionalProperties"] = False
    if cls.__doc__:
        result["description"] = cls.__doc__.strip().split("\n\n")[0]
    return result


def _type_schema(annotation: Any, registry: SchemaRegistry) -> dict[str, Any]:
    if annotation in _STATUS_ENUMS:
        # Known statuses are listed for readers; any other string is kept as the Go manager did.
        return {"type": "string", "examples": _STATUS_ENUMS[annotation]}
    if annotation is str:
        return {"type": "string"}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"}
    if annotation is ObjectId:
        return {"type": "string", "pattern": _OBJECT_ID_PATTERN}
    if annotation is datetime:
        return {"type": "string", "format": "date-time"}
    if annotation is TimeOfDay:
        return {"type": "string", "pattern": "^[0-9]{2}:[0-9]{2}$"}
    if annotation is Any:
        return {}
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in arguments if option is not type(None)]
        if len(options) == 1 and options[0] is ObjectId:
            # An empty ID is written as "" (or left out when omitempty).
            return {"type": "string", "pattern": "^([0-9a-f]{24})?$"}
        if len(options) == 1 and options[0] is datetime:
            return {"type": "string", "format": "date-time"}
        schemas = [_type_schema(option, registry) for option in options]
        if len(options) != len(arguments):
            schemas.append({"type": "null"})
        return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    if origin is tuple and len(arguments) == 2 and arguments[1] is Ellipsis:
        return {"type": "array", "items": _type_schema(arguments[0], registry)}
    if origin in (list, Sequence):
        return {"type": "array", "items": _type_schema(arguments[0], registry)}
    if origin is dict:
        value = arguments[1] if len(arguments) == 2 else Any
        schema: dict[str, Any] = {"type": "object"}
        if value is not Any:
            schema["additionalProperties"] = _type_schema(value, registry)
        return schema
    if is_document(annotation):
        return registry.ref(annotation)
    raise TypeError(f"no JSON Schema for {annotation!r}")


# --- operations ----------------------------------------------------------------------------------


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for part in path.split("/")
        if part.startswith("{") and part.endswith("}")
    ]


_MEDIA: Final = {
    Body.TEXT: "text/plain",
    Body.BINARY: "application/octet-stream",
}


def _catalogue_operation(item: Endpoint, registry: SchemaRegistry) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for reply in item.replies:
        response: dict[str, Any] = {"description": reply.meaning}
        if reply.body is Body.JSON:
            schema = {"type": "object"} if reply.document is None else registry.ref(reply.document)
            response["content"] = {"application/json": {"schema": schema}}
        elif reply.body in _MEDIA:
            response["content"] = {_MEDIA[reply.body]: {"schema": {"type": "string"}}}
        responses[str(reply.status)] = response
    operation: dict[str, Any] = {
        "operationId": item.name,
        "summary": item.summary,
        "tags": [item.group],
        "responses": responses,
    }
    parameters = _path_parameters(item.path)
    if parameters:
        operation["parameters"] = parameters
    if item.request is Body.JSON and item.request_document is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": registry.ref(item.request_document)}},
        }
    elif item.request in _MEDIA:
        operation["requestBody"] = {
            "required": True,
            "content": {_MEDIA[item.request]: {"schema": {"type": "string"}}},
        }
    operation["security"] = {
        Auth.NONE: [],
        Auth.WORKER: [{"workerBasic": []}],
        Auth.REGISTRATION: [{}, {"registrationToken": []}],
        Auth.USER: _USER_SECURITY,
    }[item.auth]
    return operation


def _api_operation(route: ApiRoute, registry: SchemaRegistry) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    replies = list(route.replies)
    if route.auth:
        replies.append(_AUTH_401)
        replies.append(_AUTH_498)
    for reply in replies:
        response: dict[str, Any] = {"description": reply.meaning}
        if reply.media_type == "application/json":
            document = reply.document or ApiError
            response["content"] = {"application/json": {"schema": registry.ref(document)}}
        elif reply.media_type is not None:
            schema = {"type": "string"}
            if reply.media_type.startswith("image/"):
                schema["contentMediaType"] = reply.media_type
            response["content"] = {reply.media_type: {"schema": schema}}
        responses[str(reply.status)] = response
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": ["user"],
        "responses": responses,
        "security": _USER_SECURITY if route.auth else [],
    }
    parameters = _path_parameters(route.path)
    for parameter in parameters:
        parameter["schema"] = {"type": "string", "pattern": "^[0-9a-fA-F]{24}$"}
        parameter["description"] = "24 hexadecimal characters"
    parameters.extend(
        {
            "name": query.name,
            "in": "query",
            "required": False,
            "description": query.description,
            "schema": query.schema,
        }
        for query in route.query
    )
    if parameters:
        operation["parameters"] = parameters
    if route.request is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": registry.ref(route.request)}},
        }
    return operation


_AUTH_401: Final = ApiReply(401, "missing, malformed, badly signed or revoked user token")
_AUTH_498: Final = ApiReply(498, "the user token has expired")


def extra_operations(registry: SchemaRegistry) -> dict[str, dict[str, dict[str, Any]]]:
    """The routes outside the catalogue and the user API: login, logout, this document, the
    dashboard's page and its latest-image probe, Shaman's ``/my-info``."""
    text = {"text/plain": {"schema": {"type": "string"}}}
    error = {"application/json": {"schema": registry.ref(ApiError)}}
    return {
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "tags": ["user"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/login": {
            "get": {
                "operationId": "login",
                "summary": "Store a user token as the `jwtToken` cookie and go to the dashboard.",
                "tags": ["user"],
                "security": [],
                "parameters": [
                    {
                        "name": "token",
                        "in": "query",
                        "required": False,
                        "description": "a user token; `serve` prints a link with one",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "303": {"description": "cookie set; see Location"},
                    "401": {
                        "description": "the token is missing, bad, revoked or expired: the login "
                        "page again, saying which",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                },
            }
        },
        "/logout": {
            "get": {
                "operationId": "logout",
                "summary": "Forget the `jwtToken` cookie.",
                "tags": ["user"],
                "security": [],
                "responses": {"303": {"description": "cookie removed; see Location"}},
            }
        },
        "/": {
            "get": {
                "operationId": "dashboard",
                "summary": "The dashboard (HTML): its login page without a valid token.",
                "tags": ["dashboard"],
                "security": [{}, *_USER_SECURITY],
                "responses": {
                    "200": {
                        "description": "the page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/dashboard/latest-image": {
            "get": {
                "operationId": "dashboard_latest_image",
                "summary": "Whether there is a latest image, and when it was made.",
                "tags": ["dashboard"],
                "security": _USER_SECURITY,
                "responses": {
                    "200": {
                        "description": "`available`, and `modified` as a Unix time or null",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["available", "modified"],
                                    "properties": {
                                        "available": {"type": "boolean"},
                                        "modified": {"type": ["number", "null"]},
                                    },
                                }
                            }
                        },
                    },
                    "401": {"description": "missing or invalid user token", "content": error},
                    "498": {"description": "the user token has expired", "content": error},
                },
            }
        },
        "/my-info": {
            "get": {
                "operationId": "shaman_my_info",
                "summary": "Who the token names (Shaman).",
                "tags": ["shaman"],
                "security": _USER_SECURITY,
                "responses": {
                    "200": {"description": "the token's subject", "content": text},
                    "401": {"description": "missing or invalid user token", "content": text},
                    "498": {"description": "the user token has expired", "content": text},
                },
            }
        },
    }


def openapi_document(
    api_routes: Iterable[ApiRoute],
    *,
    shaman: bool = True,
    version: str = "0.1.0",
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the manager (Shaman's endpoints only when it is on)."""
    registry = SchemaRegistry()
    paths: dict[str, dict[str, Any]] = {}
    for item in ENDPOINTS:
        if item.group == "shaman" and not shaman:
            continue
        for method in item.methods:
            paths.setdefault(item.path, {})[method.lower()] = _catalogue_operation(item, registry)
    # Operation IDs must be unique; the catalogue gives one name to a multi-method endpoint.
    for operations in paths.values():
        if len(operations) > 1:
            for method, operation in operations.items():
                if list(operations).index(method) > 0:
                    operation["operationId"] = f"{operation['operationId']}_{method}"
    for route in api_routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _api_operation(route, registry)
    for path, operations in extra_operations(registry).items():
        if path == "/my-info" and not shaman:
            continue
        paths.setdefault(path, {}).update(operations)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Flamenco Manager",
            "version": version,
            "description": "The Flamenco 2.x worker protocol, Shaman, and the user API.",
        },
        "paths": paths,
        "components": {"schemas": registry.schemas, "securitySchemes": _SECURITY_SCHEMES},
    }
