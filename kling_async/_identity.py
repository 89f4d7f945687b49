"""Job identity: a job *is* its content — the canonical create request, images by content.

`content_id` hashes every field a job sends (model, mode, duration, aspect ratio, prompt,
negative prompt, its own watermark, callback_url and external_task_id) with each image as
`sha256:<hex of its bytes>` (local files, bytes and base64 alike: the same bytes go on the
wire) or `url:<text>`. Spelling does not matter (`images` or `image_list`, defaults written
out or left out, `./a.png` or `a.png`); content does. `job_key` adds the occurrence number
among identical jobs, so two identical lines stay two jobs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from .models import MultiImageToVideoRequest

__all__ = [
    "IDENTITY_VERSION",
    "content_id",
    "generated_external_id",
    "invalid_content_id",
    "job_key",
]

#: Mixed into every identity: a future change of the canonical form cannot alias an old one.
IDENTITY_VERSION = "kling-async/job/2"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def content_id(request: MultiImageToVideoRequest, images: Sequence[str]) -> str:
    """sha256 of the canonical request; `images` are the images' content digests, in order."""
    canonical = {
        "model_name": request.model_name,
        "mode": request.mode,
        "duration": request.duration,
        "aspect_ratio": request.aspect_ratio,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt or None,  # "" is not sent: same as absent
        "watermark": request.watermark,
        "callback_url": request.callback_url,
        "external_task_id": request.external_task_id,
        "images": list(images),
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _sha(f"{IDENTITY_VERSION}\n{text}")


def invalid_content_id(text: str) -> str:
    """The identity content of a line that is not a valid job: its text (it is never sent)."""
    return _sha(f"{IDENTITY_VERSION}\ninvalid\n{text.strip()}")


def job_key(content: str, occurrence: int) -> str:
    """The job's identity: its content and which identical copy it is (0, 1, … in file order)."""
    return _sha(f"{content}:{occurrence}")


def generated_external_id(batch_id: str, key: str) -> str:
    """The idempotency key of a job without its own: from the batch and the identity only.

    Never from a line number, so a job keeps its id (and its task) wherever its line moves;
    the batch id (random per output folder) keeps it apart from every other folder's jobs.
    """
    return f"ka-{batch_id[:10]}-{key[:24]}"
