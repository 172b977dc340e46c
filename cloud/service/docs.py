"""Offline API docs and the error bodies the OpenAPI spec declares.

`add_offline_docs(app)` serves Swagger UI at /docs and ReDoc at /redoc from the static files that the
`fastapi-offline` package ships (Swagger UI and ReDoc builds, MIT-licensed), under /docs-assets/: no CDN,
no web fonts, so the pages work on a machine without internet. `errors(404, 422)` is a route's
`responses=` entry for the errors it really answers, each with its JSON body schema.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

ASSETS = "/docs-assets"


class ErrorBody(BaseModel):
    """Every error the service raises itself: one sentence naming what is wrong and how to fix it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "user 'nobody' is not known to this service; "
                    "list the users with GET /v1/users?offset=0&limit=100"
                }
            ]
        }
    )

    detail: str = Field(
        description="what went wrong and what to do about it",
        examples=["user 'nobody' is not known to this service; list the users with GET /v1/users?offset=0&limit=100"],
    )


class FieldError(BaseModel):
    """One invalid part of a request, as FastAPI's request validation reports it."""

    loc: list[str | int] = Field(description="where: body/query/path, then the field path", examples=[["query", "n"]])
    msg: str = Field(description="what is wrong", examples=["Input should be less than or equal to 3"])
    type: str = Field(description="pydantic error type", examples=["less_than_equal"])


class InvalidRequest(BaseModel):
    """422: the request's parameters or body fail validation (a list of field errors), or name something the
    service does not serve, such as an unknown source (a sentence)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": [
                        {
                            "loc": ["query", "n"],
                            "msg": "Input should be less than or equal to 3",
                            "type": "less_than_equal",
                        }
                    ]
                },
                {"detail": "ids: unknown source(s) ['podcast']; this service's sources are ['video', 'article']"},
            ]
        }
    )

    detail: list[FieldError] | str = Field(description="the field errors, or one sentence")


ERRORS: dict[int, tuple[type[BaseModel], str]] = {
    404: (ErrorBody, "Not found: the body names what is missing and how to list what exists"),
    409: (ErrorBody, "Conflict with the service's current state: the body says which"),
    413: (ErrorBody, "Request body or id list over the service's limit: the body names the limit"),
    422: (InvalidRequest, "Invalid request: field errors, or an unknown name"),
    500: (ErrorBody, "Unexpected failure: the body has an error id to look up in the service log"),
}


def errors(*codes: int) -> dict[int | str, dict]:
    """`responses=` entries for the given error codes (500 is always added: any route can fail)."""
    return {code: {"model": ERRORS[code][0], "description": ERRORS[code][1]} for code in (*codes, 500)}


def add_offline_docs(app: FastAPI) -> None:
    """Serve /docs (Swagger UI) and /redoc (ReDoc) from packaged assets; the app needs docs_url=None, redoc_url=None."""
    static = resources.files("fastapi_offline") / "static"
    app.mount(ASSETS, StaticFiles(directory=str(static)), name="docs-assets")
    title = f"{app.title} - API docs"
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError("the app serves no OpenAPI schema (openapi_url=None): the docs pages need one")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=title,
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def only_declared_errors(app: FastAPI) -> None:
    """Drop the 422 that FastAPI adds to every route with parameters from the spec, so it lists only what
    `errors(...)` declares: a route whose parameters cannot fail validation (any string) never answers 422."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # FastAPI's own: builds the schema and keeps it as app.openapi_schema
        for operations in schema["paths"].values():
            for operation in operations.values():
                answer = operation.get("responses", {}).get("422", {})
                if (
                    answer.get("content", {})
                    .get("application/json", {})
                    .get("schema", {})
                    .get("$ref", "")
                    .endswith("/HTTPValidationError")
                ):
                    del operation["responses"]["422"]
        components = schema.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in components and "/HTTPValidationError" not in str(schema["paths"]):
            components.pop("HTTPValidationError")
            components.pop("ValidationError", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema
