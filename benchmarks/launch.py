"""Run one command and report its wall time, CPU time and peak RSS (a tiny `/usr/bin/time`).

    python -I -S benchmarks/launch.py REPORT_FILE COMMAND [ARG ...]

Why not measure from the benchmark process itself: Linux's `ru_maxrss` of a child keeps the
high-water mark of the memory it was forked (or vforked) from, so a child of a process that
holds a 200,000-call fake world would "peak" at that world's size. This launcher is small
(~10 MB), so the command it forks starts from a clean slate. Writes one line to REPORT_FILE:
`exit_code wall_seconds cpu_seconds peak_rss_kib`. Standard library only, no site imports.
"""

import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    """Fork, exec, wait4, report; pass SIGTERM on to the command."""
    report_path, argv = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the command
        try:
            os.execv(argv[0], argv)  # noqa: S606 - argv comes from the benchmark itself
        finally:
            os._exit(127)  # exec failed

    def forward(signum: int, _frame: object) -> None:
        os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    _, status, usage = os.wait4(pid, 0)
    wall_seconds = time.perf_counter() - started
    exit_code = os.waitstatus_to_exitcode(status)
    cpu_seconds = usage.ru_utime + usage.ru_stime
    Path(report_path).write_text(
        f"{exit_code} {wall_seconds:.6f} {cpu_seconds:.6f} {usage.ru_maxrss}\n", encoding="utf-8"
    )
    return 0 if exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
