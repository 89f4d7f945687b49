"""Child process: one `kling-async` command as a user runs it, its retry waits scaled.

    python -m benchmarks._shared_child SCALE run JOBS --out DIR ...

The CLI scales the request rate and the poll pause by flags (`--rps`, `--poll-interval`), but
has no flag for the retry policy's waits (the 1303 back-off above all): at T ≈ 2 s instead of
~120 s they would weigh 60× what they weigh at real scale. This child runs the CLI's own
`main(argv)` with the Client given the default RetryPolicy scaled by SCALE (T / 120 s), as
benchmarks/_ours.py does for the in-process scenarios; nothing else differs.
"""

from __future__ import annotations

import sys
from functools import partial

import kling_async as kling
from kling_async import cli

from ._ours import scaled_retry


def main() -> int:
    scale, *argv = sys.argv[1:]
    cli.Client = partial(kling.Client, retry=scaled_retry(float(scale)))  # type: ignore[misc]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
