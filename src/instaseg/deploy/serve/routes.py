"""The two prediction endpoints: PaddleX's ``/instance-segmentation`` and instaseg's ``/predict``.

Bodies are parsed here rather than by FastAPI's model binding so that each kind of bad request gets its own
status and a sentence saying what to fix: 400 empty or malformed json, 415 a body that is not json (or, for
``/predict``, a multipart form), 422 a field of the wrong type or range, or an image that cannot be used.
"""

from __future__ import annotations

import asyncio
import hmac
from email.message import Message
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from instaseg.deploy.serve import answers
from instaseg.deploy.serve.inputs import RequestError, decode_image, image_bytes
from instaseg.deploy.serve.schemas import (
    ErrorResponse,
    NativeRequest,
    NativeResponse,
    PaddleXRequest,
    PaddleXResponse,
    new_log_id,
    parse_json_object,
    validate,
)
from instaseg.deploy.serve.service import Service

ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 413, 415, 422, 503, 504)}
INLINE_JSON_BYTES = 256 * 1024  # larger json bodies are parsed off the event loop
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _content_type(request: Request) -> tuple[str, str]:
    """(maintype, subtype) of the request, ("", "") when it names none."""
    value = request.headers.get("content-type")
    if not value:
        return "", ""
    message = Message()
    message["content-type"] = value
    return message.get_content_maintype(), message.get_content_subtype()


def _is_json(maintype: str, subtype: str) -> bool:
    # no content type is read as json, as FastAPI (and so PaddleX's server) does
    return not maintype or (maintype == "application" and (subtype == "json" or subtype.endswith("+json")))


def check_api_key(request: Request, service: Service) -> None:
    expected = service.config.api_key
    if not expected:
        return
    given = request.headers.get("x-api-key", "")
    auth = request.headers.get("authorization", "")
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise RequestError(401, "a valid API key is required (X-API-Key or Authorization: Bearer)",
                           {"WWW-Authenticate": "Bearer"})


async def _json_body(request: Request, multipart_too: bool = False) -> dict:
    maintype, subtype = _content_type(request)
    if not _is_json(maintype, subtype):
        accepted = "application/json or multipart/form-data" if multipart_too else "application/json"
        raise RequestError(415, f"content type {maintype}/{subtype} is not accepted: send {accepted}")
    body = await request.body()
    if len(body) > INLINE_JSON_BYTES:  # parsing megabytes of base64 json would stall every other request
        return await asyncio.to_thread(parse_json_object, body)
    return parse_json_object(body)


async def _image(field_bytes: bytes, service: Service) -> Any:
    service.check_capacity()  # a full queue refuses before the decoding work
    return await asyncio.to_thread(decode_image, field_bytes, service.config)


def add_prediction_routes(app: FastAPI, service: Service) -> None:
    paddlex_body = {"content": {"application/json": {"schema": PaddleXRequest.model_json_schema()}}, "required": True}

    @app.post(
        "/instance-segmentation",
        summary="PaddleX-compatible instance segmentation",
        responses={200: {"model": PaddleXResponse}, **ERRORS},
        openapi_extra={"requestBody": paddlex_body},
        response_class=JSONResponse,
    )
    async def instance_segmentation(request: Request) -> JSONResponse:
        check_api_key(request, service)
        req = validate(PaddleXRequest, await _json_body(request))
        data = await asyncio.to_thread(image_bytes, req.image, service.config)
        result = await service.predict(await _image(data, service), req.threshold)
        visualize = service.config.visualize if req.visualize is None else req.visualize
        payload = await asyncio.to_thread(answers.paddlex_result, result, visualize)
        return JSONResponse({"logId": new_log_id(), "errorCode": 0, "errorMsg": "Success", "result": payload})

    native_body = {
        "content": {
            "application/json": {"schema": NativeRequest.model_json_schema()},
            "multipart/form-data": {"schema": _multipart_schema()},
        },
        "required": True,
    }

    @app.post(
        "/predict",
        summary="instaseg's Result json: full-image COCO RLE masks, polygons on request",
        responses={200: {"model": NativeResponse}, **ERRORS},
        openapi_extra={"requestBody": native_body},
        response_class=JSONResponse,
    )
    async def predict(request: Request) -> JSONResponse:
        check_api_key(request, service)
        req, data, name = await _native_request(request, service)
        result = await service.predict(await _image(data, service), req.threshold)
        result.input_path = name
        body = await asyncio.to_thread(answers.native_result, result, req.polygons, bool(req.visualize))
        return JSONResponse(body)


async def _native_request(request: Request, service: Service) -> tuple[NativeRequest, bytes, str | None]:
    """(the request's options, the image file's bytes, the uploaded file's name) from json or multipart."""
    maintype, subtype = _content_type(request)
    if maintype == "multipart" and subtype == "form-data":
        return await _multipart_request(request)
    req = validate(NativeRequest, await _json_body(request, multipart_too=True))
    return req, await asyncio.to_thread(image_bytes, req.image, service.config), None


async def _multipart_request(request: Request) -> tuple[NativeRequest, bytes, str | None]:
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise RequestError(422, "the multipart form needs the image as a file part named 'file'")
        data = await upload.read()
        fields: dict[str, Any] = {"image": "-"}
        for key in ("threshold", "polygons", "visualize"):
            value = form.get(key)
            if isinstance(value, str):
                fields[key] = _form_value(key, value)
        return validate(NativeRequest, fields), data, upload.filename


def _form_value(key: str, value: str) -> Any:
    """A form field's text as the type the json body would carry."""
    text = value.strip().lower()
    if key == "threshold":
        try:
            return float(text)
        except ValueError:
            raise RequestError(422, f"threshold: {value!r} is not a number") from None
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise RequestError(422, f"{key}: {value!r} is not true or false")


def _multipart_schema() -> dict:
    return {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "the image file"},
            "threshold": {"type": "number", "minimum": 0, "maximum": 1},
            "polygons": {"type": "boolean"},
            "visualize": {"type": "boolean"},
        },
    }
