"""Request and response shapes: PaddleX's instance-segmentation serving schema, and instaseg's own.

The PaddleX models follow PaddleX's serving schema field for field (``paddlex/inference/serving/schemas/
instance_segmentation.py`` and its serving docs): a request ``{image, threshold?, visualize?}``; an answer
``{logId, errorCode, errorMsg, result: {instances: [{bbox, categoryId, categoryName, score, mask: {rleResult,
size}}], image}}``; a failure ``{logId, errorCode, errorMsg}`` with ``errorCode`` the HTTP status.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from instaseg.deploy.serve.inputs import RequestError


def new_log_id() -> str:
    return str(uuid.uuid4())


class PaddleXRequest(BaseModel):
    """``POST /instance-segmentation``. Unknown fields are ignored, as PaddleX does."""

    model_config = ConfigDict(strict=True)
    image: str = Field(description="Base64 of the image file, or an http(s) URL when the server allows its host")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Score threshold (default: the server's)")
    visualize: bool | None = Field(None, description="Return the overlay as base64 JPEG (default: the server's)")


class NativeRequest(PaddleXRequest):
    """``POST /predict`` as JSON; the same fields as a multipart form with the image as a file part ``file``."""

    polygons: bool = Field(False, description="Also return each mask's outer contours as polygons")
    visualize: bool | None = Field(None, description="Return the overlay as base64 JPEG (default: no)")


class Mask(BaseModel):
    rleResult: str = Field(description="COCO compressed RLE counts of the mask cropped to the rounded box")
    size: tuple[int, int] = Field(description="[height, width] of the cropped mask")


class Instance(BaseModel):
    bbox: tuple[float, float, float, float] = Field(description="[x1, y1, x2, y2] in image pixels")
    categoryId: int
    categoryName: str
    score: float
    mask: Mask


class PaddleXResult(BaseModel):
    instances: list[Instance]
    image: str | None = None


class PaddleXResponse(BaseModel):
    logId: str
    errorCode: int = 0
    errorMsg: str = "Success"
    result: PaddleXResult


class ErrorResponse(BaseModel):
    """Every refusal and failure, on every endpoint."""

    logId: str
    errorCode: int = Field(description="The HTTP status")
    errorMsg: str


class NativeBox(BaseModel):
    cls_id: int
    label: str
    score: float
    coordinate: tuple[float, float, float, float]


class NativeResponse(BaseModel):
    """`instaseg.inference.result.Result.json`: full-image COCO RLE masks; polygons and overlay on request."""

    input_path: str | None
    height: int
    width: int
    boxes: list[NativeBox]
    masks: list[dict[str, Any]]
    polygons: list[list[list[float]]] | None = None
    image: str | None = None


def error_body(status: int, message: str, log_id: str | None = None) -> dict:
    return {"logId": log_id or new_log_id(), "errorCode": status, "errorMsg": message}


def parse_json_object(body: bytes) -> dict:
    """The request body as a json object, or a RequestError saying what is wrong with it."""
    if not body.strip():
        raise RequestError(400, "the request body is empty: send a json object such as {\"image\": \"<base64>\"}")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"the request body is not valid json ({e})") from None
    except RecursionError:
        raise RequestError(400, "the request body's json is nested too deeply") from None
    if not isinstance(data, dict):
        raise RequestError(422, "the request body must be a json object such as {\"image\": \"<base64>\"}")
    return data


def validate(model: type[BaseModel], data: dict) -> Any:
    """``model`` from ``data``; field errors become one 422 sentence naming each field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "body"
            problems.append(f"{where}: {err['msg']}")
        raise RequestError(422, "; ".join(problems)) from None
