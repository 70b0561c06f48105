"""tap-bolna-state: how far each agent is synced, read from a tap-bolna state.

    meltano state get dev:tap-bolna-to-target-postgres | tap-bolna-state
    tap-bolna-state state.json --json

Reads the state Meltano prints (wrapped in `singer_state`) or a bare Singer state, from a file
or stdin, and prints one row per agent of the executions stream: how far it is synced, the
calls still followed because their status can change, the calls remembered from the
look-back, and where the next sync will start. The rules are `windows.py`'s, not repeated
here. Exit status 0, or 2 with one line when the input is not a tap-bolna state.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import typing as t
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tap_bolna.statuses import EXECUTION_STATUSES
from tap_bolna.windows import AgentBookmark, LookBack, format_timestamp, parse_timestamp, plan_sync

if t.TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

EXIT_NOT_A_STATE = 2
STREAM = "executions"
# Any width: where a sync starts and which pending calls it gives up do not depend on it.
PLAN_WINDOW_DAYS = 7


class UnusableInputError(Exception):
    """The input (state, config or option) cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class Assumptions:
    """What the next sync's start depends on besides the state: the settings and the time."""

    lookback: LookBack
    start_date: dt.datetime | None
    now: dt.datetime


@dataclass(frozen=True)
class AgentRow:
    """What one agent's bookmark says, and where its next sync starts."""

    agent_id: str
    synced_through: dt.datetime | None  # None: no window completed yet
    # Calls the next sync re-checks, by status, and the oldest one's created_at.
    pending_by_status: dict[str, int]
    oldest_pending: dt.datetime | None
    # Pending for longer than pending_lookback_days: the next sync stops following them.
    pending_too_old: int
    lookback_calls: int | None  # None: state written before the look-back
    next_start: dt.datetime | None  # None: from the agent's created_at (no bookmark, no start)

    def as_json(self, now: dt.datetime) -> dict[str, t.Any]:
        """The row for machines: ISO timestamps, numbers, null where the table says '-'."""
        return {
            "agent_id": self.agent_id,
            "synced_through": iso(self.synced_through),
            "synced_seconds_ago": (
                None
                if self.synced_through is None
                else round((now - self.synced_through).total_seconds())
            ),
            "pending_calls": self.pending_by_status,
            "pending_total": sum(self.pending_by_status.values()),
            "oldest_pending_created_at": iso(self.oldest_pending),
            "pending_too_old": self.pending_too_old,
            "lookback_calls": self.lookback_calls,
            "next_sync_starts": iso(self.next_start),
        }


def iso(moment: dt.datetime | None) -> str | None:
    """A timestamp in the state's own form, or None."""
    return None if moment is None else format_timestamp(moment)


def agent_partitions(document: object) -> list[Mapping[str, t.Any]] | None:
    """The executions stream's partitions; None for a state that was never written.

    Raises UnusableInputError when the document is not a tap-bolna state.
    """
    if isinstance(document, dict) and "singer_state" in document:
        document = document["singer_state"]  # `meltano state get` wraps the Singer state
    if not isinstance(document, dict):
        msg = f"the input is {json_kind(document)}, not a state (a JSON object with bookmarks)"
        raise UnusableInputError(msg)
    bookmarks = document.get("bookmarks")
    if not document or bookmarks == {}:
        return None
    if not isinstance(bookmarks, dict):
        msg = "the input has no bookmarks: it is not a Singer state"
        raise UnusableInputError(msg)
    if STREAM not in bookmarks:
        streams = ", ".join(sorted(map(str, bookmarks))[:5])
        msg = (
            f"the state has no bookmarks for tap-bolna's {STREAM} stream (it has: {streams}): "
            "another tap's state, or executions were never synced"
        )
        raise UnusableInputError(msg)
    stream_state = bookmarks[STREAM]
    partitions = stream_state.get("partitions") if isinstance(stream_state, dict) else None
    if not isinstance(partitions, list):
        msg = f"bookmarks.{STREAM} has no partitions list: not tap-bolna's state (one per agent)"
        raise UnusableInputError(msg)
    for position, partition in enumerate(partitions):
        context = partition.get("context") if isinstance(partition, dict) else None
        if not isinstance(context, dict) or not isinstance(context.get("agent_id"), str):
            msg = (
                f"bookmarks.{STREAM} partition {position} has no context.agent_id: not tap-bolna's"
            )
            raise UnusableInputError(msg)
    return partitions


def json_kind(value: object) -> str:
    """`a JSON array`, `a JSON string`, … for a value that is not the object expected."""
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    kind = kinds.get(type(value), "number")
    return "JSON null" if value is None else f"a JSON {kind}"


def agent_row(partition: Mapping[str, t.Any], assumptions: Assumptions) -> AgentRow:
    """Read one agent's bookmark and plan its next sync as the tap would."""
    agent_id = partition["context"]["agent_id"]
    try:
        bookmark = AgentBookmark.from_state(partition)
        plan = plan_sync(
            bookmark,
            first_created_at=assumptions.start_date,
            end=assumptions.now,
            now=assumptions.now,
            window_days=PLAN_WINDOW_DAYS,
            lookback=assumptions.lookback,
        )
        followed = {
            call_id: call
            for call_id, call in bookmark.pending.items()
            if call_id not in plan.expired_pending
        }
        oldest = min(
            (parse_timestamp(call["created_at"]) for call in followed.values()), default=None
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        msg = f"agent {agent_id}: the bookmark cannot be read ({reason}): not tap-bolna's state"
        raise UnusableInputError(msg) from None
    return AgentRow(
        agent_id=agent_id,
        synced_through=bookmark.synced_through,
        pending_by_status=count_by_status(call.get("status") for call in followed.values()),
        oldest_pending=oldest,
        pending_too_old=len(plan.expired_pending),
        lookback_calls=None if bookmark.recent is None else len(bookmark.recent),
        next_start=plan.start,
    )


def count_by_status(statuses: t.Iterable[object]) -> dict[str, int]:
    """Calls per status, in the order a call goes through them (unknown ones last)."""
    counts = Counter(str(status) if status else "unknown" for status in statuses)
    order = {status: position for position, status in enumerate(EXECUTION_STATUSES)}
    return dict(sorted(counts.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def describe_counts(counts: Mapping[str, int]) -> str:
    """`queued 3, ringing 1`, or `-` for none."""
    return ", ".join(f"{status} {count}" for status, count in counts.items()) or "-"


def describe_age(moment: dt.datetime, now: dt.datetime) -> str:
    """How long before `now`: `42 s ago`, `5 min ago`, `2 h 5 min ago`, `3 d 4 h ago`."""
    seconds = round((now - moment).total_seconds())
    suffix = "ago" if seconds >= 0 else "from now"
    minutes, hours, days = abs(seconds) // 60, abs(seconds) // 3600, abs(seconds) // 86400
    if minutes == 0:
        return f"{abs(seconds)} s {suffix}"
    if hours == 0:
        return f"{minutes} min {suffix}"
    if days == 0:
        return f"{hours} h {minutes % 60} min {suffix}"
    return f"{days} d {hours % 24} h {suffix}"


def readable_time(moment: dt.datetime | None, absent: str = "-") -> str:
    """`2026-11-23 19:41` (UTC, to the minute; --json has the exact value), for the table."""
    return absent if moment is None else moment.strftime("%Y-%m-%d %H:%M")


def render_table(rows: Sequence[AgentRow], assumptions: Assumptions) -> str:
    """What was assumed, an aligned table under a header line, and a one-line total."""
    now = assumptions.now
    header = (
        "AGENT",
        "SYNCED THROUGH",
        "",
        "CALLS FOLLOWED",
        "OLDEST PENDING",
        "LOOK-BACK",
        "NEXT SYNC FROM",
    )
    lines = [header]
    for row in rows:
        pending = describe_counts(row.pending_by_status)
        if row.pending_too_old:
            pending += f" (+{row.pending_too_old} too old)"
        lines.append(
            (
                row.agent_id,
                readable_time(row.synced_through, "never"),
                "" if row.synced_through is None else describe_age(row.synced_through, now),
                pending,
                readable_time(row.oldest_pending),
                "-" if row.lookback_calls is None else str(row.lookback_calls),
                readable_time(row.next_start, "agent created"),
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    right_aligned = {5}  # the count
    table = [
        "  ".join(
            cell.rjust(width) if column in right_aligned else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]
    return "\n".join([title_line(assumptions), *table, total_line(rows)])


def title_line(assumptions: Assumptions) -> str:
    """The time and settings the next sync is planned with (times in the table are UTC)."""
    lookback = assumptions.lookback
    start_date = assumptions.start_date
    return (
        f"tap-bolna executions state at {readable_time(assumptions.now)} UTC (times in UTC; "
        f"next sync planned with lookback_minutes={lookback.minutes}, "
        f"pending_lookback_days={lookback.pending_days}"
        + (f", start_date={iso(start_date)}" if start_date else "")
        + ")"
    )


def total_line(rows: Sequence[AgentRow]) -> str:
    """One line: agents, calls followed by status, too old ones, look-back calls."""
    pending: Counter[str] = Counter()
    for row in rows:
        pending.update(row.pending_by_status)
    followed = sum(pending.values())
    too_old = sum(row.pending_too_old for row in rows)
    parts = [
        f"Total: {len(rows)} agent{'s' if len(rows) != 1 else ''}",
        f"{followed} calls followed"
        + (f" ({describe_counts(count_by_status(pending.elements()))})" if followed else ""),
        *([f"{too_old} too old to follow (the next sync drops them)"] if too_old else []),
        f"{sum(row.lookback_calls or 0 for row in rows)} look-back calls remembered",
    ]
    return "; ".join(parts) + "."


def read_json(text: str, what: str) -> object:
    """Parse JSON, or say in one line where it stops being JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"{what} is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise UnusableInputError(msg) from None


def read_text(path: str, what: str) -> str:
    """A file's text, or one line saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = f"{what} {path} not found"
    except UnicodeDecodeError:
        msg = f"{what} {path} is not UTF-8 text"
    except OSError as exc:
        msg = f"{what} {path} cannot be read: {exc.strerror or exc}"
    raise UnusableInputError(msg)


def config_settings(path: str) -> dict[str, t.Any]:
    """lookback_minutes, pending_lookback_days and start_date from a tap config file.

    Only these are read and no value is ever printed: the file also holds the API key.
    """
    config = read_json(read_text(path, "Config file"), f"Config file {path}")
    if not isinstance(config, dict):
        msg = f"Config file {path} is not a JSON object of settings"
        raise UnusableInputError(msg)
    settings: dict[str, t.Any] = {}
    for name, minimum in (("lookback_minutes", 0), ("pending_lookback_days", 1)):
        value = config.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            msg = f"Config file {path}: {name} must be a whole number of at least {minimum}"
            raise UnusableInputError(msg)
        settings[name] = value
    if config.get("start_date"):
        settings["start_date"] = timestamp_setting(
            str(config["start_date"]), f"Config file {path}: start_date"
        )
    return settings


def timestamp_setting(value: str, what: str) -> dt.datetime:
    """An ISO 8601 timestamp (UTC when it has no offset), or one line saying it is not one."""
    try:
        return parse_timestamp(value)
    except (ValueError, TypeError):
        msg = f"{what} is not an ISO 8601 timestamp (like 2026-01-31T08:00:00Z)"
        raise UnusableInputError(msg) from None


def parser() -> argparse.ArgumentParser:
    """The command line: a state file (or stdin) and what the next sync depends on."""
    defaults = LookBack()
    cli = argparse.ArgumentParser(
        prog="tap-bolna-state",
        description=(
            "Show how far each agent is synced in a tap-bolna state, the pending calls still "
            "followed, and where the next sync starts."
        ),
        epilog="Example: meltano state get dev:tap-bolna-to-target-postgres | tap-bolna-state",
    )
    cli.add_argument(
        "state_file",
        nargs="?",
        default="-",
        help="state JSON, bare or as `meltano state get` prints it (default: stdin)",
    )
    cli.add_argument(
        "--config",
        metavar="FILE",
        help="tap config JSON: its lookback_minutes, pending_lookback_days and start_date",
    )
    cli.add_argument(
        "--lookback-minutes",
        type=int,
        help=f"the tap's lookback_minutes (default: the config's, else {defaults.minutes})",
    )
    cli.add_argument(
        "--pending-lookback-days",
        type=int,
        help=f"pending_lookback_days (default: the config's, else {defaults.pending_days})",
    )
    cli.add_argument(
        "--now", metavar="TIMESTAMP", help="ISO 8601 time to plan the next sync at (default: now)"
    )
    cli.add_argument("--json", action="store_true", help="a JSON array of rows, for machines")
    return cli


def assumptions_from(args: argparse.Namespace) -> Assumptions:
    """The settings and time to plan with: options first, then --config, then the defaults."""
    from_config = config_settings(args.config) if args.config else {}
    defaults = LookBack()
    minutes = first_given(args.lookback_minutes, from_config.get("lookback_minutes"))
    days = first_given(args.pending_lookback_days, from_config.get("pending_lookback_days"))
    if minutes is not None and minutes < 0:
        msg = "--lookback-minutes must be 0 or more"
        raise UnusableInputError(msg)
    if days is not None and days < 1:
        msg = "--pending-lookback-days must be 1 or more"
        raise UnusableInputError(msg)
    now = timestamp_setting(args.now, "--now") if args.now else dt.datetime.now(dt.timezone.utc)
    return Assumptions(
        lookback=LookBack(
            defaults.minutes if minutes is None else minutes,
            defaults.pending_days if days is None else days,
        ),
        start_date=from_config.get("start_date"),
        now=now,
    )


def first_given(*values: int | None) -> int | None:
    """The first value that is not None."""
    return next((value for value in values if value is not None), None)


def read_state(state_file: str) -> object:
    """The state document from a file or stdin."""
    if state_file == "-":
        if sys.stdin.isatty():
            msg = "no state given: name a file, or pipe one in (meltano state get <id> | …)"
            raise UnusableInputError(msg)
        try:
            text = sys.stdin.read()
        except UnicodeDecodeError:
            msg = "the input is not UTF-8 text, not a state"
            raise UnusableInputError(msg) from None
        return read_json(text, "the input")
    return read_json(read_text(state_file, "State file"), f"State file {state_file}")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table (or JSON); exit 2 with one line when the input cannot be used."""
    args = parser().parse_args(argv)
    try:
        assumptions = assumptions_from(args)
        partitions = agent_partitions(read_state(args.state_file))
        rows = [agent_row(partition, assumptions) for partition in partitions or ()]
    except UnusableInputError as exc:
        print(f"tap-bolna-state: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_NOT_A_STATE
    # `{}` (never synced, or a state id Meltano does not know), or no window finished yet.
    never_synced = (
        "No agent has been synced yet: the state holds no executions bookmarks "
        "(`meltano state get` prints {} for a state id it does not know, too)."
    )
    if args.json:
        output = json.dumps([row.as_json(assumptions.now) for row in rows], indent=2)
        if not rows:
            print(never_synced, file=sys.stderr)  # noqa: T201
    else:
        output = render_table(rows, assumptions) if rows else never_synced
    try:
        print(output, flush=True)  # noqa: T201
    except BrokenPipeError:  # `| head`: the reader has gone, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
