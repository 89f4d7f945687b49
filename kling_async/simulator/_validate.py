"""Validation of create bodies and list query parameters, with messages naming field and limit."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ._body import MAX_IMAGE_BYTES, StreamedImage
from ._images import ImageInfo, sniff_image
from ._protocol import SimError

__all__ = [
    "MAX_IMAGE_BYTES",
    "CreateRequest",
    "check_image",
    "check_streamed",
    "parse_create",
    "parse_page",
]

MAX_PROMPT_CHARS = 2500
MIN_SIDE = 300
MAX_IMAGES = 4
MODELS = ("kling-v1-6",)
MODES = ("std", "pro")
DURATIONS = ("5", "10")
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
_FIELDS = frozenset(
    {
        "model_name",
        "image_list",
        "prompt",
        "negative_prompt",
        "mode",
        "duration",
        "aspect_ratio",
        "watermark_info",
        "callback_url",
        "external_task_id",
    }
)
_INT_RE = re.compile(r"[+-]?\d+")


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A validated create body, defaults applied."""

    prompt: str
    image_count: int
    model_name: str = "kling-v1-6"
    negative_prompt: str | None = None
    mode: str = "std"
    duration: str = "5"
    aspect_ratio: str = "16:9"
    watermark: bool = False
    callback_url: str | None = None
    external_task_id: str | None = None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(name: str, expected: str, value: Any) -> SimError:
    return SimError(1200, f"field '{name}' must be {expected} (got {_json_type(value)})")


def _optional_str(body: Mapping[str, Any], name: str) -> str | None:
    # The reference example sends "" for unused optional fields: treat "" (and null) as absent.
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _type_error(name, "a string", value)
    return value


def _enum(body: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = _optional_str(body, name)
    if value is None:
        return allowed[0]
    if value not in allowed:
        raise SimError(1201, f"field '{name}' must be one of {', '.join(allowed)} (got {value!r})")
    return value


def _check_text(name: str, value: str) -> None:
    if len(value) > MAX_PROMPT_CHARS:
        raise SimError(
            1201,
            f"field '{name}' must be at most {MAX_PROMPT_CHARS} characters (got {len(value)})",
        )


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _oversize(estimated: int, where: str) -> None:
    if estimated > MAX_IMAGE_BYTES:
        raise SimError(
            1201,
            f"field '{where}' must be at most 10 MB ({MAX_IMAGE_BYTES} bytes) decoded "
            f"(got {estimated} bytes)",
        )


def _not_base64(where: str) -> SimError:
    return SimError(1201, f"field '{where}' is neither an http(s) URL nor valid base64")


def _check_pixels(data: bytes, info: ImageInfo | None, where: str) -> None:
    """Format (sniffed from `data` unless `info` is known), both sides, aspect ratio."""
    if info is None:
        try:
            info = sniff_image(data)
        except ValueError as exc:
            raise SimError(1201, f"field '{where}' must be a JPEG or PNG image ({exc})") from None
    if info.width < MIN_SIDE or info.height < MIN_SIDE:
        raise SimError(
            1201,
            f"field '{where}' must be at least {MIN_SIDE}x{MIN_SIDE} px "
            f"(got {info.width}x{info.height})",
        )
    # Integer form of 1/2.5 <= w/h <= 2.5.
    if 2 * info.width > 5 * info.height or 2 * info.height > 5 * info.width:
        raise SimError(
            1201,
            f"field '{where}' aspect ratio (w/h) must be between 1:2.5 and 2.5:1 "
            f"(got {info.width}x{info.height})",
        )


def check_image(value: str, where: str) -> None:
    """Accept an http(s) URL as is; decode and check raw base64 (format, size, dimensions)."""
    if value.lower().startswith(("http://", "https://")):
        if not _is_http_url(value):
            raise SimError(1201, f"field '{where}' is not a valid http(s) URL")
        return
    if value[:5].lower() == "data:":
        raise SimError(
            1201, f"field '{where}' must be raw base64 without a 'data:...;base64,' prefix"
        )
    # Reject oversize input before decoding it.
    _oversize(len(value) * 3 // 4 - value[-2:].count("="), where)
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _not_base64(where) from None
    _check_pixels(data, None, where)


def check_streamed(image: StreamedImage, where: str) -> None:
    """The checks of `check_image`, in its order, on a string that was checked as it streamed.

    A streamed string starts with 64 KiB of base64 alphabet, so it is never a URL or data: URI.
    """
    _oversize(image.estimated, where)
    if not image.valid:
        raise _not_base64(where)
    _check_pixels(bytes(image.head), image.info, where)


def _image_list(body: Mapping[str, Any], streamed: Mapping[str, StreamedImage]) -> int:
    items = body.get("image_list")
    if items is None:
        raise SimError(1200, "missing required field 'image_list'")
    if not isinstance(items, list):
        raise _type_error("image_list", "an array", items)
    if not 1 <= len(items) <= MAX_IMAGES:
        raise SimError(
            1201, f"field 'image_list' must have 1 to {MAX_IMAGES} items (got {len(items)})"
        )
    for index, item in enumerate(items):
        where = f"image_list[{index}]"
        if not isinstance(item, dict):
            raise _type_error(where, "an object", item)
        extra = sorted(set(item) - {"image"})
        if extra:
            raise SimError(1201, f"unknown field(s) in '{where}': {', '.join(extra)}")
        image = item.get("image")
        if image is None:
            raise SimError(1200, f"missing required field '{where}.image'")
        if not isinstance(image, str):
            raise _type_error(f"{where}.image", "a string", image)
        if not image:
            raise SimError(1201, f"field '{where}.image' must not be empty")
        if (stream := streamed.get(image)) is not None:
            check_streamed(stream, f"{where}.image")
        else:
            check_image(image, f"{where}.image")
    return len(items)


def _watermark(body: Mapping[str, Any]) -> bool:
    info = body.get("watermark_info")
    if info is None:
        return False
    if not isinstance(info, dict):
        raise _type_error("watermark_info", "an object", info)
    extra = sorted(set(info) - {"enabled"})
    if extra:
        raise SimError(1201, f"unknown field(s) in 'watermark_info': {', '.join(extra)}")
    enabled = info.get("enabled")
    if enabled is None:
        raise SimError(1200, "missing required field 'watermark_info.enabled'")
    if not isinstance(enabled, bool):
        raise _type_error("watermark_info.enabled", "a boolean", enabled)
    return enabled


def parse_create(raw: bytes, streamed: Mapping[str, StreamedImage] | None = None) -> CreateRequest:
    """Parse and validate a create body; raise SimError 1200/1201 naming the field.

    `streamed`: the images `BodyReader` checked as they arrived, by the placeholder standing
    for each in `raw`.
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise SimError(1200, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise SimError(1200, f"request body must be a JSON object (got {_json_type(body)})")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise SimError(1201, f"unknown field(s): {', '.join(unknown)}")
    prompt = body.get("prompt")
    if prompt is None:
        raise SimError(1200, "missing required field 'prompt'")
    if not isinstance(prompt, str):
        raise _type_error("prompt", "a string", prompt)
    if not prompt.strip():
        raise SimError(1201, "field 'prompt' must not be empty")
    _check_text("prompt", prompt)
    negative = _optional_str(body, "negative_prompt")
    if negative is not None:
        _check_text("negative_prompt", negative)
    callback_url = _optional_str(body, "callback_url")
    if callback_url is not None and not _is_http_url(callback_url):
        raise SimError(1201, f"field 'callback_url' must be an http(s) URL (got {callback_url!r})")
    return CreateRequest(
        prompt=prompt,
        image_count=_image_list(body, streamed or {}),
        model_name=_enum(body, "model_name", MODELS),
        negative_prompt=negative,
        mode=_enum(body, "mode", MODES),
        duration=_enum(body, "duration", DURATIONS),
        aspect_ratio=_enum(body, "aspect_ratio", ASPECT_RATIOS),
        watermark=_watermark(body),
        callback_url=callback_url,
        external_task_id=_optional_str(body, "external_task_id"),
    )


def _page_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not _INT_RE.fullmatch(raw.strip()):
        raise SimError(1201, f"query '{name}' must be an integer in [{low}, {high}] (got {raw!r})")
    value = int(raw)
    if not low <= value <= high:
        raise SimError(1201, f"query '{name}' must be in [{low}, {high}] (got {value})")
    return value


def parse_page(query: Mapping[str, str]) -> tuple[int, int]:
    """Return (pageNum, pageSize) from the query string; defaults 1 and 30."""
    return (
        _page_param(query, "pageNum", 1, 1, 1000),
        _page_param(query, "pageSize", 30, 1, 500),
    )
