"""The create-task request: every documented field, enum and limit, checked before any I/O."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .._errors import InvalidRequestError
from .._images import EncodingCache, ImageInput

__all__ = [
    "MAX_IMAGES",
    "MAX_PROMPT_CHARS",
    "AspectRatio",
    "Duration",
    "ImageLike",
    "ImageParser",
    "Mode",
    "ModelName",
    "MultiImageToVideoRequest",
]

MAX_IMAGES = 4
MAX_PROMPT_CHARS = 2500

ModelName: TypeAlias = Literal["kling-v1-6"]
Mode: TypeAlias = Literal["std", "pro"]
Duration: TypeAlias = Literal["5", "10"]
AspectRatio: TypeAlias = Literal["16:9", "9:16", "1:1"]
#: What a user may pass as an image: a path, bytes, an http(s) URL, raw base64 or a data: URI.
ImageLike: TypeAlias = str | os.PathLike[str] | bytes | ImageInput
#: (value, index, base_dir) → the checked image: `ImageInput.parse`, or a caching stand-in.
ImageParser: TypeAlias = Callable[[str, int, Path | None], ImageInput]


def _parse_image(value: str, index: int, base_dir: Path | None) -> ImageInput:
    return ImageInput.parse(value, index=index, base_dir=base_dir)


def _field_name(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "request"


def _as_invalid(exc: ValidationError) -> InvalidRequestError:
    """Turn pydantic's report into our error: the first problem names the field, all are listed."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, InvalidRequestError) and len(errors) == 1:
        return original
    parts = []
    for err in errors:
        inner = (err.get("ctx") or {}).get("error")
        text = str(inner) if isinstance(inner, InvalidRequestError) else err["msg"]
        value = repr(err.get("input"))
        shown = value if len(value) <= 60 else value[:57] + "..."
        parts.append(f"{_field_name(tuple(err['loc']))}: {text} (got {shown})")
    field = _field_name(tuple(first["loc"]))
    rule: str | None = first["msg"]  # pydantic's wording: "String should have at most 2500 …"
    if isinstance(original, InvalidRequestError):
        field, rule = original.field, original.limit
    given = None if first["type"] == "missing" else first.get("input")  # not the whole job
    return InvalidRequestError("; ".join(parts), field=field, limit=rule, value=given)


def _check_external_id(value: str) -> str:
    """The rules an external_task_id must meet to name a task in a URL path."""
    if not 1 <= len(value) <= 256:
        raise ValueError(f"must be 1 to 256 characters, got {len(value)}")
    # Tasks are looked up by this id in a URL path: "/" would split it, "." and ".." vanish.
    if "/" in value or value in (".", ".."):
        raise ValueError(f"must not contain '/' or be '.' or '..': {value!r}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate cannot go into a URL
            raise ValueError("must be valid Unicode text") from None
    return value


def _not_boolean(field: str, value: Any) -> InvalidRequestError:
    # Not bool(): "no", "false", 0 or 2 would each decide a paid option by accident.
    return InvalidRequestError(
        f"{field}: expected true or false (a JSON boolean), got {value!r}",
        field=field,
        limit="true or false",
        value=value,
    )


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """Accept the wire names (`image_list: [{"image": …}]`, `watermark_info`) and "" as absent."""
    data = dict(data)
    if "image_list" in data and "images" not in data:
        items = data.pop("image_list")
        if isinstance(items, list):
            data["images"] = [i.get("image") if isinstance(i, dict) else i for i in items]
        else:
            data["images"] = items
    if "watermark_info" in data and "watermark" not in data:
        info = data.pop("watermark_info")
        enabled = info.get("enabled") if isinstance(info, dict) else info
        if isinstance(info, dict) and not isinstance(enabled, bool):
            raise _not_boolean("watermark_info.enabled", enabled)
        data["watermark"] = enabled
    for key in ("negative_prompt", "callback_url", "external_task_id"):
        if data.get(key) == "":  # the reference example sends "" for "absent"
            data[key] = None
    if data.get("duration") in (5, 10) and not isinstance(data["duration"], bool):
        data["duration"] = str(data["duration"])  # 5 → "5": the API wants a string
    return data


class MultiImageToVideoRequest(BaseModel):
    """A request to turn 1–4 reference images and a prompt into a 5 or 10 s video."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    images: list[ImageInput] = Field(min_length=1, max_length=MAX_IMAGES)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    model_name: ModelName = "kling-v1-6"
    mode: Mode = "std"
    duration: Duration = "5"
    aspect_ratio: AspectRatio = "16:9"
    watermark: bool = False
    callback_url: str | None = None
    external_task_id: str | None = Field(default=None, min_length=1, max_length=256)

    def __init__(self, /, **data: Any) -> None:  # positional-only: a "self" key is a field
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _as_invalid(exc) from None

    @classmethod
    def from_job(
        cls,
        job: dict[str, Any],
        *,
        base_dir: Path | None = None,
        images: ImageParser | None = None,
    ) -> MultiImageToVideoRequest:
        """Build from a job mapping (JSONL line); relative image paths resolve against base_dir.

        `images(value, index, base_dir)` replaces `ImageInput.parse` for string images (a
        preflight passes one that probes each file once).
        """
        data = _normalise(job)
        given = data.get("images")
        if isinstance(given, list) and (base_dir is not None or images is not None):
            parse = images or _parse_image
            data["images"] = [
                parse(img, i, base_dir) if isinstance(img, str) else img
                for i, img in enumerate(given)
            ]
        return cls(**data)

    @model_validator(mode="before")
    @classmethod
    def _accept_wire_form(cls, data: Any) -> Any:
        return _normalise(data) if isinstance(data, dict) else data

    @field_validator("images", mode="before")
    @classmethod
    def _parse_images(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise InvalidRequestError(
                f"images: expected a list of 1–{MAX_IMAGES} images, got {type(value).__name__}",
                field="images",
                limit=f"1–{MAX_IMAGES} items",
                value=value,
            )
        if not 1 <= len(value) <= MAX_IMAGES:
            raise InvalidRequestError(
                f"images: {len(value)} given, the API takes 1 to {MAX_IMAGES}",
                field="images",
                limit=f"1–{MAX_IMAGES} items",
                value=len(value),
            )
        return [ImageInput.parse(v, index=i) for i, v in enumerate(value)]

    @field_validator("watermark", mode="before")
    @classmethod
    def _json_boolean(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise _not_boolean("watermark", value)
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank")
        return value

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"callback_url must be an http(s) URL, got {value!r}")
        return value

    @field_validator("external_task_id")
    @classmethod
    def _queryable_id(cls, value: str | None) -> str | None:
        return None if value is None else _check_external_id(value)

    def with_external_id(self, external_task_id: str) -> MultiImageToVideoRequest:
        """A copy carrying the given idempotency key, checked like any other field."""
        # Only the new key needs checking (a bad key breaks the lookup); re-validating the
        # whole request per job would cost the bulk path for nothing.
        if external_task_id == "":  # "" means absent, as in the create body
            return self.model_copy(update={"external_task_id": None})
        try:
            _check_external_id(external_task_id)
        except ValueError as exc:
            raise InvalidRequestError(
                f"external_task_id: {exc}", field="external_task_id", value=external_task_id
            ) from None
        return self.model_copy(update={"external_task_id": external_task_id})

    async def to_wire(self, cache: EncodingCache | None = None) -> dict[str, Any]:
        """The JSON body for the create call; images are encoded now, not at construction."""
        return self.wire_body([await img.wire_value(cache) for img in self.images])

    def wire_body(self, images: Sequence[str]) -> dict[str, Any]:
        """The create body's fields in wire order, `images[i]` as image_list[i].image."""
        body: dict[str, Any] = {
            "model_name": self.model_name,
            "image_list": [{"image": image} for image in images],
            "prompt": self.prompt,
            "mode": self.mode,
            "duration": self.duration,
            "aspect_ratio": self.aspect_ratio,
        }
        if self.negative_prompt:
            body["negative_prompt"] = self.negative_prompt
        if self.watermark:
            body["watermark_info"] = {"enabled": True}
        if self.callback_url:
            body["callback_url"] = self.callback_url
        if self.external_task_id:
            body["external_task_id"] = self.external_task_id
        return body

    def fingerprint_fields(self) -> dict[str, Any]:
        """Everything that defines the job's content, images by description (for stable ids)."""
        data = self.model_dump(exclude={"images", "external_task_id", "callback_url"})
        data["images"] = [img.describe() for img in self.images]
        return data
