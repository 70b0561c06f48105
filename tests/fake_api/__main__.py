"""Run the fake Bolna API from the command line (used by `make demo` and the benchmarks).

Prints exactly one line, `FAKE_BOLNA_URL=http://127.0.0.1:PORT`, then serves until SIGTERM or
SIGINT and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from tests.fake_api.rate_limits import DEFAULT_RATE_LIMITS
from tests.fake_api.server import FakeBolnaServer
from tests.fake_api.world import World

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType


def _byte_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        bounds = (int(low), int(high if sep else low))
    except ValueError:
        msg = f"expected LOW-HIGH, e.g. 200-400, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not 0 <= bounds[0] <= bounds[1]:
        msg = f"need 0 <= LOW <= HIGH, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return bounds


def _share(text: str) -> float:
    try:
        share = float(text)
    except ValueError:
        share = -1.0
    if not 0 <= share <= 1:
        msg = f"expected a share from 0 to 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return share


def _utc_datetime(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_api", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--days", type=float, default=45)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--api-key", default="demo-key")
    parser.add_argument(
        "--transcript-bytes", type=_byte_range, default=(200, 400), metavar="LOW-HIGH"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added to every response"
    )
    parser.add_argument("--pending-fraction", type=float, default=0.05)
    parser.add_argument("--old-pending", type=int, default=0)
    parser.add_argument(
        "--now", type=_utc_datetime, default=None, help="ISO 8601; default: the server's time"
    )
    parser.add_argument(
        "--clock-offset-seconds",
        type=float,
        default=0.0,
        help="how far the server's clock (Date header, new stamps) runs ahead; negative: behind",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="answer 429 to requests beyond this many at once (default: no limit)",
    )
    parser.add_argument(
        "--retry-after",
        default="1",
        help="Retry-After sent with those 429s; an empty string sends none",
    )
    limits = parser.add_argument_group(
        "rate limits", "per organisation, as Bolna documents them; refused with 429"
    )
    limits.add_argument(
        "--agent-rate-limit",
        type=int,
        default=DEFAULT_RATE_LIMITS["agent"].requests,
        help="requests per window on /v2/agent/... and /call (default: %(default)s)",
    )
    limits.add_argument(
        "--default-rate-limit",
        type=int,
        default=DEFAULT_RATE_LIMITS["default"].requests,
        help="requests per window on every other path (default: %(default)s)",
    )
    limits.add_argument("--rate-window-seconds", type=float, default=60.0)
    limits.add_argument("--rate-window-mode", choices=("sliding", "fixed"), default="sliding")
    limits.add_argument(
        "--used-by-others-share",
        type=_share,
        default=0.0,
        help="share of each limit the customer's own apps use, 0 to 1 (default: 0)",
    )
    limits.add_argument(
        "--rate-limit-retry-after",
        default=None,
        help="Retry-After sent with rate-limit 429s (default: none, as the live API)",
    )
    limits.add_argument("--no-rate-limits", action="store_true", help="lift both limits")
    return parser


def _apply_rate_limits(api: FakeBolnaServer, args: argparse.Namespace) -> None:
    for group, requests in (("agent", args.agent_rate_limit), ("default", args.default_rate_limit)):
        api.set_rate_limit(
            group,
            None if args.no_rate_limits else requests,
            per_seconds=args.rate_window_seconds,
            used_by_others=round(requests * args.used_by_others_share),
            mode=args.rate_window_mode,
            retry_after=args.rate_limit_retry_after or None,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the world, serve it, and block until told to stop."""
    args = _parser().parse_args(argv)
    world = World.generate(
        seed=args.seed,
        agents=args.agents,
        calls=args.calls,
        days=args.days,
        now=args.now,
        pending_fraction=args.pending_fraction,
        transcript_bytes=args.transcript_bytes,
        old_pending=args.old_pending,
        clock_offset=timedelta(seconds=args.clock_offset_seconds),
    )
    # The world lives until exit: keep later collections from re-scanning its millions of objects.
    gc.freeze()
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with FakeBolnaServer(world, api_key=args.api_key, port=args.port) as api:
        api.latency = args.latency
        api.max_in_flight = args.max_in_flight
        api.in_flight_retry_after = args.retry_after or None
        _apply_rate_limits(api, args)
        sys.stdout.write(f"FAKE_BOLNA_URL={api.url}\n")
        sys.stdout.flush()
        # Short waits so the signal handler runs promptly on every platform.
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
