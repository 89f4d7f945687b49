"""Child process: one `kling-async` command, run as a user runs it, measured from inside.

    python -m benchmarks._cli_child RESULT.json LOG -- run JOBS --out DIR ...

It calls the CLI's `main(argv)` in this process (output to LOG), then writes the exit code,
the CPU time (user + system, all threads) and the peak RSS (VmHWM: this process alone, not
inherited across fork + exec) to RESULT.json. Start-up and imports are included in both.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
from pathlib import Path

from ._common import peak_rss_mb


def main() -> int:
    result_path, log_path, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: _cli_child RESULT LOG -- COMMAND ..."
    from kling_async.cli import main as cli_main

    with (
        open(log_path, "w", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        code = cli_main(argv)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "exit_code": code,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": peak_rss_mb(),
    }
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
