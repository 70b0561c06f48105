"""The data behind the fake Bolna API: agents, their calls (executions), batches and account.

A `World` is generated from a seed and a fixed "now", so the same arguments always give the same
objects. Tests then change it while the server runs (`add_calls`, `complete_pending`,
`disconnect_calls`, `retry_calls`, `update_calls`, `reveal`, `remove_calls`), always under
`world.lock`, and the per-agent index that serves the paged endpoint stays sorted. Its clock
(`server_now`) may disagree with ours.

Calls move as on the live API: `call-disconnected` comes before `completed`, with the post-call
fields still empty; auto-retry puts a `no-answer` call back to `scheduled` under the same id; a
batch's calls start `prepared`. Windows are listed "by last run" (newest `updated_at` first).
"""

from __future__ import annotations

import copy
import gc
import random
import threading
import uuid
from bisect import bisect_left, bisect_right, insort
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

T = TypeVar("T")

# The fake's own status lists, from Bolna's docs and its live API (never the tap's lists).
# Still moving: `prepared` is a batch call's first status; `call-disconnected` is set the instant
# the line drops, before post-call processing fills in duration, cost and recording.
MOVING_STATUSES = (
    "scheduled",
    "prepared",
    "queued",
    "rescheduled",
    "initiated",
    "ringing",
    "in-progress",
    "call-disconnected",
)
# Look final, but auto-retry can put them back to `scheduled` with the same id (`retry_calls`).
RETRYABLE_FINAL_STATUSES = ("no-answer", "busy", "failed", "error")
TERMINAL_STATUSES = ("completed", "canceled", "stopped", "balance-low")
# A status no documentation lists, as the live API may send one day; never generated, only
# given through `add_calls(status=...)`. A client should treat it as still moving.
UNDOCUMENTED_STATUSES = ("transferring",)
# Not final: the statuses `complete_pending` finishes.
PENDING_STATUSES = MOVING_STATUSES + UNDOCUMENTED_STATUSES
FINAL_STATUSES = TERMINAL_STATUSES + RETRYABLE_FINAL_STATUSES
ALL_STATUSES = PENDING_STATUSES + FINAL_STATUSES

# Shares of each final status in generated history; every status shows up in a few hundred calls.
_GENERATED_FINAL_WEIGHTS = {
    "completed": 75,
    "canceled": 2,
    "stopped": 2,
    "balance-low": 1,
    "no-answer": 8,
    "busy": 5,
    "failed": 4,
    "error": 3,
}
# Pending statuses of generated calls. Old ones never sit in `call-disconnected` (it lasts
# minutes); `prepared` calls are made only for the batch scheduled ahead (see `_populate`).
_GENERATED_OLD_PENDING = (
    "scheduled",
    "queued",
    "rescheduled",
    "initiated",
    "ringing",
    "in-progress",
)
_GENERATED_RECENT_PENDING = (*_GENERATED_OLD_PENDING, "call-disconnected")
_PREPARED_CALLS = 3  # how many of the first agent's newest pending calls wait in that batch
# Pending statuses in which the call has been dialled, so the provider knows it.
_DIALLED_STATUSES = frozenset({"initiated", "ringing", "in-progress", "call-disconnected"})
# What pending calls become in `complete_pending`: mostly answered, a few not.
_COMPLETION_STATUSES = ("completed", "no-answer", "busy", "failed")
_COMPLETION_WEIGHTS = (80, 8, 6, 6)
# Statuses where somebody actually talked, so there is a transcript, cost and recording.
_CONVERSATION_STATUSES = frozenset({"completed", "stopped"})
_EMPTY_COST = {"llm": 0.0, "network": 0.0, "platform": 0.0, "synthesizer": 0.0, "transcriber": 0.0}
# What a call remembers of each earlier attempt once auto-retry reschedules it.
_RETRY_HISTORY_FIELDS = ("status", "updated_at", "error_message")
_RECORDING_URL = "https://api.bolna.ai/recordings/call/{}"
_LIST_ORDERS = ("updated_at", "created_at")
_CACHED_LISTINGS = 256  # sorted windows kept between mutations, least recently read dropped
_last_run = itemgetter("updated_at", "id")

# Fields `update_calls` leaves alone: identity, ordering, status and batch membership are kept
# by other methods and indexes, and it sets `updated_at` itself.
_NOT_UPDATABLE = frozenset({"id", "agent_id", "created_at", "status", "updated_at", "batch_id"})
_RECENT_PENDING_WINDOW = timedelta(days=10)
# Calls created well before they ran (scheduled, queued campaigns): up to 6 h between
# `created_at` and the run, so listing "by last run" differs from `created_at` order.
_RAN_LATER_SHARE = 0.15
_RAN_LATER_MAX_SECONDS = 6 * 3600
_BATCH_SHARE = 0.2
_OLD_NAME_SHARE = (
    0.05  # calls that still carry `conversation_time` instead of `conversation_duration`
)
_VOICE_MAIL_SHARE = 0.1
_TRANSFER_SHARE_OF_COMPLETED = 0.14  # ~10% of all calls, since ~70% are completed
# Version-4 / RFC 4122 variant bits, as uuid.UUID(version=4) sets them.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)
_MAX_ID = "\U0010ffff"  # sorts after any id, to bisect past every call at one timestamp

_ERROR_MESSAGES = {
    "failed": (
        "Call failed: the destination number is unreachable",
        "Call failed: telephony provider rejected the call (invalid number)",
    ),
    "error": (
        "Internal error while connecting the call",
        "Agent configuration error: synthesizer voice not found",
    ),
    "balance-low": ("Wallet balance too low to place the call",),
}
_HANGUP_BY_STATUS = {
    "completed": (("Callee", "Normal Hangup", 4000), ("Agent", "Agent ended the call", 4010)),
    "call-disconnected": (("Callee", "Call disconnected by user", 4000),),
    "stopped": (("API", "Call stopped via API", 4020),),
    "busy": (("Carrier", "Busy Line", 3010),),
    "no-answer": (("Carrier", "No Answer", 3020),),
    "failed": (("Carrier", "Unreachable", 3030),),
    "canceled": (("API", "Canceled before dialing", 3040),),
    "balance-low": (("Platform", "Balance low", 3050),),
    "error": (("Platform", "Internal error", 5000),),
}
_CARRIERS = (
    "Reliance Jio Infocomm Ltd (RJIL)",
    "Bharti Airtel Ltd",
    "Vodafone Idea Ltd",
    "T-Mobile USA, Inc.",
    "Verizon Wireless",
)
_AGENT_NAMES = (
    "Alfred",
    "Maya - Appointment Reminders",
    "Support Line",
    "Lead Qualifier",
    "Payment Follow-up",
    "Survey Bot",
    "Receptionist",
    "Renewals",
)
_FIRST_NAMES = ("Rahul", "Priya", "Aarav", "Ananya", "John", "Maria", "Wei", "Fatima", "Lucas")
_TRANSCRIPT_LINES = (
    "assistant: Hello, this is Maya calling from Acme Dental. Am I speaking with {name}?",
    "user: Yes, speaking. Who is this?",
    "assistant: I am calling to confirm your appointment for tomorrow at 10 AM.",
    "user: Oh right, I had forgotten about that. Can we move it to the afternoon?",
    "assistant: Of course. I have slots at 2 PM and at 4:30 PM. Which one suits you?",
    "user: Two PM works for me.",
    "assistant: Great, I have moved your appointment to 2 PM tomorrow.",
    "user: Thank you so much.",
    "assistant: Is there anything else I can help you with today?",
    "user: No, that is all. Bye.",
    "assistant: Thank you for your time, {name}. Have a wonderful day!",
    "user: Hello? Sorry, the line was breaking up.",
    "assistant: No problem. I was asking whether you are still interested in the offer.",
    "user: I might be. How much does the premium plan cost per month?",
    "assistant: The premium plan is 499 rupees per month, billed annually.",
    "user: Let me think about it and call you back next week.",
    "assistant: Sure, shall I schedule a callback for Monday at 11 AM?",
    "user: Yes please, that would be helpful.",
)


def format_timestamp(moment: datetime) -> str:
    """Render an aware datetime the way Bolna does: UTC, microseconds, trailing `Z`."""
    if moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: str) -> datetime:
    """Read back a timestamp written by `format_timestamp`."""
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=timezone.utc)


# `random.choice` / `randint` cost several Python calls each; generating 200,000 calls makes
# millions of draws, so the hot path uses these one-liners on `rng.random()` instead.
def _pick(rng: random.Random, options: Sequence[T]) -> T:
    return options[int(rng.random() * len(options))]


def _between(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low + 1))


def humanize_age(moment: datetime, now: datetime) -> str:
    """Describe how long ago `moment` was, like the API's `humanized_created_at`."""
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _AgentIndex:
    """One agent's calls sorted oldest first by (created_at, id), so date bounds are bisects."""

    keys: list[tuple[str, str]] = field(default_factory=list)


class World:
    """Agents, calls, batches and account data that the fake API serves, plus ways to change them.

    `executions` maps a call id to the object exactly as the API returns it, hidden calls
    included. Change calls only through the methods below: the paged endpoint reads a per-agent
    index built from `agent_id` and `created_at`, and caches each window sorted by `updated_at`
    until `version` (bumped by every method that changes a call) moves.
    """

    def __init__(self, *, now: datetime, seed: int, transcript_bytes: tuple[int, int]) -> None:
        """Create an empty world; use `World.generate` to get one with history."""
        if now.tzinfo is None:
            msg = "now must be a timezone-aware datetime"
            raise ValueError(msg)
        low, high = transcript_bytes
        if not 0 <= low <= high:
            msg = "transcript_bytes must be (low, high) with 0 <= low <= high"
            raise ValueError(msg)
        self.now = now.astimezone(timezone.utc)
        self.seed = seed
        self.transcript_bytes = (low, high)
        # Re-entrant so a test can hold it around several mutations, which also take it.
        self.lock = threading.RLock()
        # Where mutations read the time; tests may replace it to pin `updated_at`.
        self.clock: Callable[[], datetime] = _utc_now
        # How far Bolna's clock is ahead of ours (negative: behind); see `server_now`.
        self.clock_offset = timedelta(0)
        self.rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
        self.agents: dict[str, dict[str, Any]] = {}
        self.executions: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.phone_numbers: list[dict[str, Any]] = []
        self.knowledgebases: list[dict[str, Any]] = []
        self.user: dict[str, Any] = {}
        self._index: dict[str, _AgentIndex] = {}
        self._batch_members: dict[str, list[str]] = {}
        self._agent_batches: dict[str, list[str]] = {}
        self._agent_numbers: dict[str, str] = {}
        self._pending: set[str] = set()
        # Calls that exist but are not listed yet; they stay out of `_index` until revealed.
        self._hidden: set[str] = set()
        # "updated_at": newest last run first, as the live list is "sorted by last run";
        # "created_at": newest created first, the order before that rule was known.
        self.list_order = "updated_at"
        # Bumped by every mutation; sorted window listings are cached until it moves.
        self.version = 0
        self._listings: OrderedDict[tuple[Any, ...], list[dict[str, Any]]] = OrderedDict()
        self._listings_version = 0
        self._next_agent = 0
        # The first agent's batch scheduled a day ahead, whose calls wait in `prepared`.
        self._upcoming_batch: str | None = None
        self._last_tick = self.now
        self._corpus = self._build_corpus(max(high * 2, 65536))

    # ------------------------------------------------------------------ generation

    @classmethod
    def generate(  # noqa: PLR0913, PLR0917 - these knobs are the public interface
        cls,
        seed: int = 1,
        agents: int = 3,
        calls: int = 1500,
        days: float = 45,
        now: datetime | None = None,
        pending_fraction: float = 0.05,
        transcript_bytes: tuple[int, int] = (200, 400),
        old_pending: int = 0,
        clock_offset: timedelta = timedelta(0),
    ) -> World:
        """Build a world of `agents` agents and `calls` calls spread over the last `days` days.

        Calls fall in [now - days, now - 1 minute], dealt to agents round-robin in time order.
        A `pending_fraction` share of the calls from the last 10 days still has a pending
        status; `old_pending` extra pending calls sit 20-30 days back, older than any sensible
        look-back window. `clock_offset` becomes the world's `clock_offset`; without `now`, the
        history ends at the server's "now" (real UTC now + `clock_offset`).
        """
        if agents < 1 and calls + old_pending > 0:
            msg = "calls need at least one agent"
            raise ValueError(msg)
        world = cls(
            now=now or _utc_now() + clock_offset, seed=seed, transcript_bytes=transcript_bytes
        )
        world.clock_offset = clock_offset
        # Millions of fresh dicts would trigger many full collections that find no garbage.
        collecting = gc.isenabled()
        gc.disable()
        try:
            world._populate(agents, calls, days, pending_fraction, old_pending)
        finally:
            if collecting:
                gc.enable()
        return world

    def _populate(
        self, agents: int, calls: int, days: float, pending_fraction: float, old_pending: int
    ) -> None:
        rng = self.rng
        start = self.now - timedelta(days=days)
        for position in range(agents):
            self._create_agent(position, start)
        self._create_batches(start)
        self._create_account()

        agent_ids = self.agent_ids
        span_us = max(1, int((self.now - timedelta(minutes=1) - start) / timedelta(microseconds=1)))
        moments = sorted(
            start + timedelta(microseconds=rng.randrange(span_us)) for _ in range(calls)
        )
        recent = self.now - _RECENT_PENDING_WINDOW
        statuses = rng.choices(
            tuple(_GENERATED_FINAL_WEIGHTS), tuple(_GENERATED_FINAL_WEIGHTS.values()), k=calls
        )
        for number, created in enumerate(moments):
            if created >= recent and rng.random() < pending_fraction:
                statuses[number] = _pick(rng, _GENERATED_RECENT_PENDING)
        prepared = self._prepare_upcoming_batch(moments, statuses, agents)
        for number, created in enumerate(moments):
            agent_id = agent_ids[number % agents]
            batch_id = prepared.get(number) or self._pick_batch(agent_id, created)
            self._create_call(agent_id, created, statuses[number], batch_id=batch_id)

        old_span_us = int(timedelta(days=10) / timedelta(microseconds=1))
        for number in range(old_pending):
            created = (
                self.now - timedelta(days=30) + timedelta(microseconds=rng.randrange(old_span_us))
            )
            status = rng.choice(_GENERATED_OLD_PENDING)
            self._create_call(agent_ids[number % agents], created, status, batch_id=None)
        self._refresh_batch_counts()

    def _prepare_upcoming_batch(
        self, moments: Sequence[datetime], statuses: list[str], agents: int
    ) -> dict[int, str]:
        """Turn the first agent's newest pending calls into `prepared` calls of its upcoming batch.

        Taken from the pending share, so `calls` and the round-robin deal stay as asked. The
        batch is dated just before its oldest call. Returns call position -> batch id.
        """
        upcoming = self._upcoming_batch
        if upcoming is None or not statuses:
            return {}
        # The first agent deals positions 0, agents, 2 * agents, ...; the newest are last.
        pending = [n for n in range(0, len(statuses), agents) if statuses[n] not in FINAL_STATUSES]
        chosen = pending[-_PREPARED_CALLS:]
        if not chosen:
            return {}
        for number in chosen:
            statuses[number] = "prepared"
        batch = self.batches[upcoming]
        created = format_timestamp(moments[chosen[0]] - timedelta(minutes=5))
        batch["created_at"] = batch["updated_at"] = min(batch["created_at"], created)
        return dict.fromkeys(chosen, upcoming)

    def _create_agent(self, position: int, history_start: datetime) -> None:
        rng = self.rng
        agent_id = self._new_uuid()
        created = history_start - timedelta(days=1 + rng.random() * 30)
        updated = created + (history_start - created) * rng.random()
        name = _AGENT_NAMES[position % len(_AGENT_NAMES)]
        if position >= len(_AGENT_NAMES):
            name = f"{name} {position // len(_AGENT_NAMES) + 1}"
        telephony = rng.choice(("twilio", "plivo"))
        tasks = [self._conversation_task(telephony)]
        if position % 2 == 0:
            tasks.append(
                {
                    "task_type": "extraction",
                    "tools_config": {
                        "llm_agent": {
                            "agent_type": "simple_llm_agent",
                            "agent_flow_type": "streaming",
                            "llm_config": {"provider": "openai", "model": "gpt-4o-mini"},
                        },
                        "synthesizer": None,
                        "transcriber": None,
                        "input": None,
                        "output": None,
                        "api_tools": None,
                    },
                    "toolchain": {"execution": "parallel", "pipelines": [["llm"]]},
                    "task_config": {},
                }
            )
        ingest: dict[str, Any] | None = None
        if position % 3 == 1:
            ingest = {
                "source_type": "csv",
                "source_url": None,
                "source_auth_token": None,
                "source_name": f"leads_{position}.csv",
            }
        self.agents[agent_id] = {
            "id": agent_id,
            "agent_name": name,
            "agent_type": rng.choice(("other", "sales", "customer-support")),
            "agent_status": "processed",
            "created_at": format_timestamp(created),
            "updated_at": format_timestamp(updated),
            "tasks": tasks,
            "agent_prompts": {
                "task_1": {
                    "system_prompt": f"You are {name}, a polite voice assistant. Be brief.",
                },
            },
            "ingest_source_config": ingest,
        }
        self._index[agent_id] = _AgentIndex()
        self._agent_batches[agent_id] = []
        self._agent_numbers[agent_id] = self._phone_number("+1")

    @staticmethod
    def _conversation_task(telephony: str) -> dict[str, Any]:
        return {
            "task_type": "conversation",
            "tools_config": {
                "llm_agent": {
                    "agent_type": "simple_llm_agent",
                    "agent_flow_type": "streaming",
                    "routes": None,
                    "llm_config": {
                        "agent_flow_type": "streaming",
                        "provider": "openai",
                        "family": "openai",
                        "model": "gpt-4o-mini",
                        "max_tokens": 150,
                        "temperature": 0.2,
                    },
                },
                "synthesizer": {
                    "provider": "elevenlabs",
                    "provider_config": {
                        "voice": "Nila",
                        "voice_id": "V9LCAAi4tTlqe9JadbCo",
                        "model": "eleven_turbo_v2_5",
                    },
                    "stream": True,
                    "buffer_size": 250,
                    "audio_format": "wav",
                },
                "transcriber": {
                    "provider": "deepgram",
                    "model": "nova-2",
                    "language": "en",
                    "stream": True,
                    "sampling_rate": 16000,
                    "encoding": "linear16",
                    "endpointing": 100,
                },
                "input": {"provider": telephony, "format": "wav"},
                "output": {"provider": telephony, "format": "wav"},
                "api_tools": None,
            },
            "toolchain": {
                "execution": "parallel",
                "pipelines": [["transcriber", "llm", "synthesizer"]],
            },
            "task_config": {
                "hangup_after_silence": 10,
                "incremental_delay": 400,
                "number_of_words_for_interruption": 2,
                "hangup_after_LLMCall": False,
                "call_cancellation_prompt": None,
                "backchanneling": False,
                "ambient_noise": False,
                "call_terminate": 90,
                "voicemail": False,
            },
        }

    def _create_batches(self, history_start: datetime) -> None:
        """Give each agent a campaign roughly weekly; the first agent also has one not yet run."""
        rng = self.rng
        span = self.now - history_start
        per_agent = max(1, round(span / timedelta(days=7)))
        for position, agent_id in enumerate(self.agent_ids):
            for number in range(per_agent):
                created = (
                    history_start
                    + span * (number / per_agent)
                    - timedelta(hours=rng.randint(1, 12))
                )
                self._add_batch(agent_id, created, created + timedelta(minutes=rng.randint(5, 90)))
            if position == 0:
                created = self.now - timedelta(hours=2)
                self._upcoming_batch = self._add_batch(
                    agent_id, created, self.now + timedelta(days=1)
                )

    def _add_batch(self, agent_id: str, created: datetime, scheduled: datetime) -> str:
        batch_id = uuid.UUID(int=self.rng.getrandbits(128), version=4).hex
        self.batches[batch_id] = {
            "batch_id": batch_id,
            "agent_id": agent_id,
            "humanized_created_at": "",
            "created_at": format_timestamp(created),
            "updated_at": format_timestamp(created),
            "status": "scheduled",
            "scheduled_at": format_timestamp(scheduled),
            "from_phone_number": self._agent_numbers[agent_id],
            "from_phone_numbers": [self._agent_numbers[agent_id]],
            "file_name": f"campaign_{len(self.batches) + 1}.csv",
            "valid_contacts": 0,
            "total_contacts": 0,
            "execution_status": {},
        }
        self._batch_members[batch_id] = []
        self._agent_batches[agent_id].append(batch_id)
        return batch_id

    def _create_account(self) -> None:
        rng = self.rng
        for agent_id in self.agent_ids:
            self.phone_numbers.append(
                self._phone_number_record(self._agent_numbers[agent_id], agent_id)
            )
        self.phone_numbers.append(self._phone_number_record(self._phone_number("+1"), None))
        for name in ("pricing-faq.pdf", "product-catalogue.pdf"):
            created = self.now - timedelta(days=rng.randint(40, 200))
            self.knowledgebases.append(
                {
                    "rag_id": str(self._new_uuid()),
                    "file_name": name,
                    "humanized_created_at": humanize_age(created, self.now),
                    "created_at": format_timestamp(created),
                    "updated_at": format_timestamp(created + timedelta(minutes=3)),
                    "vector_id": str(self._new_uuid()),
                    "status": "processed",
                    "chunk_size": 512,
                    "similarity_top_k": 15,
                    "overlapping": 128,
                    "language_support": None,
                }
            )
        self.user = {
            "id": self._new_uuid(),
            "name": "Demo Workspace",
            "email": "owner@example.com",
            "wallet": round(rng.uniform(5, 500), 2),
            "concurrency": {"max": 10, "current": 0},
        }

    def _phone_number_record(self, number: str, agent_id: str | None) -> dict[str, Any]:
        created = self.now - timedelta(days=self.rng.randint(60, 300))
        updated = created + timedelta(days=self.rng.randint(0, 30))
        renewal = created + timedelta(days=30 * ((self.now - created).days // 30 + 1))
        return {
            "id": uuid.UUID(int=self.rng.getrandbits(128), version=4).hex,
            "humanized_created_at": humanize_age(created, self.now),
            "created_at": format_timestamp(created),
            "humanized_updated_at": humanize_age(updated, self.now),
            "updated_at": format_timestamp(updated),
            "renewal_at": renewal.strftime("%d %b, %Y"),
            "phone_number": number,
            "agent_id": agent_id,
            "price": "$5.0",
            "telephony_provider": self.rng.choice(("twilio", "plivo")),
            "rented": True,
        }

    # ------------------------------------------------------------------ one call

    def _create_call(
        self,
        agent_id: str,
        created: datetime,
        status: str,
        *,
        batch_id: str | None,
        hidden: bool = False,
    ) -> str:
        """Make one call in `status` (and in `batch_id`, if given).

        Final calls get their outcome filled in by `_finish_call`.
        """
        rng = self.rng
        call_id = self._new_uuid()
        old_shape = rng.random() < _OLD_NAME_SHARE
        provider = _pick(rng, ("twilio", "plivo"))
        call_type = "outbound" if batch_id or rng.random() < 0.7 else "inbound"
        customer = self._phone_number(_pick(rng, ("+91", "+1")))
        agent_number = self._agent_numbers[agent_id]
        stamp = format_timestamp(created)
        name = _pick(rng, _FIRST_NAMES)
        execution: dict[str, Any] = {"id": call_id, "agent_id": agent_id}
        # Old-shaped responses predate batches: the key is missing rather than null.
        if batch_id or not old_shape:
            execution["batch_id"] = batch_id
        execution[("conversation_time" if old_shape else "conversation_duration")] = 0.0
        execution.update(
            {
                "total_cost": 0.0,
                "status": status,
                "error_message": None,
                "answered_by_voice_mail": False,
                "transcript": None,
                "created_at": stamp,
                "updated_at": stamp,
                "cost_breakdown": dict(_EMPTY_COST),
                "telephony_data": {
                    "duration": None,
                    "to_number": customer if call_type == "outbound" else agent_number,
                    "from_number": agent_number if call_type == "outbound" else customer,
                    "recording_url": None,
                    "hosted_telephony": rng.random() < 0.5,
                    "provider_call_id": None,
                    "call_type": call_type,
                    "provider": provider,
                    "hangup_by": None,
                    "hangup_reason": None,
                    "hangup_provider_code": None,
                    "ring_duration": None,
                    "post_dial_delay": None,
                    "to_number_carrier": _pick(rng, _CARRIERS),
                },
                "transfer_call_data": None,
                "batch_run_details": None,
                "extracted_data": None,
                "context_details": {
                    "recipient_data": {"name": name, "timezone": "Asia/Kolkata"},
                    "recipient_phone_number": customer,
                },
            }
        )
        if batch_id:
            execution["batch_run_details"] = {
                "status": status,
                "created_at": stamp,
                "updated_at": stamp,
                "retried": _pick(rng, (0, 0, 0, 1, 2)),
            }
            self._batch_members[batch_id].append(call_id)
        self.executions[call_id] = execution
        if hidden:
            self._hidden.add(call_id)
        else:
            insort(self._index[agent_id].keys, (stamp, call_id))
        if status in FINAL_STATUSES:
            self._finish_call(execution, status, finished=None)
        else:
            self._start_ringing(execution, status)
            self._pending.add(call_id)
        return call_id

    def _start_ringing(self, execution: dict[str, Any], status: str) -> None:
        """Fill what a pending call already knows: a provider id once dialled, zero duration."""
        rng = self.rng
        created = parse_timestamp(execution["created_at"])
        self._set_updated(
            execution, self._settle(created, created + timedelta(seconds=rng.uniform(0.2, 5)))
        )
        if status in _DIALLED_STATUSES:
            self._dial(execution)
        if status == "call-disconnected":
            self._hang_up(execution)

    def _dial(self, execution: dict[str, Any]) -> None:
        """What the telephony provider knows once a call is dialled, before it ends."""
        telephony = execution["telephony_data"]
        if telephony["provider_call_id"] is None:
            telephony["provider_call_id"] = self._provider_call_id(telephony["provider"])
        telephony["duration"] = self._duration_value(execution["id"], 0)
        telephony["post_dial_delay"] = _between(self.rng, 0, 3)

    def _hang_up(self, execution: dict[str, Any]) -> None:
        """The line dropped: `call-disconnected`, with every post-call field still empty."""
        execution["status"] = "call-disconnected"
        self._clear_outcome(execution)
        hangup_by, reason, code = _pick(self.rng, _HANGUP_BY_STATUS["call-disconnected"])
        execution["telephony_data"].update(
            hangup_by=hangup_by, hangup_reason=reason, hangup_provider_code=code
        )

    @staticmethod
    def _clear_outcome(execution: dict[str, Any]) -> None:
        """Empty what post-call processing fills in: duration, costs, transcript, recording."""
        duration = (
            "conversation_time" if "conversation_time" in execution else "conversation_duration"
        )
        execution[duration] = 0.0
        execution["total_cost"] = 0.0
        execution["cost_breakdown"] = dict(_EMPTY_COST)
        execution["transcript"] = None
        execution["extracted_data"] = None
        execution["error_message"] = None
        execution["transfer_call_data"] = None
        telephony = execution["telephony_data"]
        telephony["recording_url"] = None
        telephony.update(hangup_by=None, hangup_reason=None, hangup_provider_code=None)

    def _finish_call(
        self, execution: dict[str, Any], status: str, finished: datetime | None
    ) -> None:
        """Give a call its final outcome; `finished` None means "some time after it started"."""
        rng = self.rng
        call_id = execution["id"]
        telephony = execution["telephony_data"]
        talked = status in _CONVERSATION_STATUSES
        ring = _between(rng, 2, 25) if status not in ("canceled", "balance-low", "error") else 0
        seconds = _between(rng, 8, 420) if talked else 0
        conversation = round(seconds + rng.random(), 3) if talked else 0.0
        execution["status"] = status
        execution[
            "conversation_time" if "conversation_time" in execution else "conversation_duration"
        ] = conversation
        if status in _ERROR_MESSAGES:
            execution["error_message"] = _pick(rng, _ERROR_MESSAGES[status])
        execution["answered_by_voice_mail"] = talked and rng.random() < _VOICE_MAIL_SHARE / 0.77
        execution["transcript"] = self._transcript() if talked else None
        if talked:
            cost = {
                "llm": round(seconds * rng.uniform(0.004, 0.02), 3),
                "network": round(seconds * rng.uniform(0.01, 0.03), 3),
                "platform": round(seconds * 0.0333, 3),
                "synthesizer": round(seconds * rng.uniform(0.01, 0.05), 3),
                "transcriber": round(seconds * rng.uniform(0.002, 0.01), 3),
            }
        else:
            cost = dict.fromkeys(("llm", "network", "platform", "synthesizer", "transcriber"), 0.0)
            cost["network"] = round(ring * 0.01, 3)
        execution["cost_breakdown"] = cost
        execution["total_cost"] = round(sum(cost.values()), 3)
        if status != "canceled" and telephony["provider_call_id"] is None:
            telephony["provider_call_id"] = self._provider_call_id(telephony["provider"])
        telephony["duration"] = self._duration_value(call_id, seconds + ring)
        telephony["ring_duration"] = ring
        telephony["post_dial_delay"] = _between(rng, 0, 3)
        hangup_by, reason, code = _pick(rng, _HANGUP_BY_STATUS[status])
        telephony.update(hangup_by=hangup_by, hangup_reason=reason, hangup_provider_code=code)
        if talked:
            telephony["recording_url"] = _RECORDING_URL.format(call_id)
            execution["extracted_data"] = (
                {
                    "user_interested": rng.random() < 0.5,
                    "callback_user": rng.random() < 0.3,
                    "preferred_slot": _pick(rng, ("2 PM", "4:30 PM", None)),
                }
                if rng.random() < 0.6
                else None
            )
        if status == "completed" and rng.random() < _TRANSFER_SHARE_OF_COMPLETED:
            transfer_seconds = _between(rng, 10, 300)
            # Opposite type from the parent's duration, so one record can hold both shapes.
            as_text = not self._duration_is_text(call_id)
            execution["transfer_call_data"] = {
                "provider_call_id": self._provider_call_id(telephony["provider"]),
                "status": "completed",
                "duration": str(transfer_seconds) if as_text else transfer_seconds,
                "cost": round(transfer_seconds * 0.02, 3),
                "to_number": self._phone_number("+91"),
                "from_number": telephony["from_number"],
                "recording_url": (
                    "https://bolna-call-recordings.s3.us-east-1.amazonaws.com/"
                    f"AC{rng.getrandbits(128):032x}/RE{rng.getrandbits(128):032x}"
                ),
                "hangup_by": "Callee",
                "hangup_reason": "Normal Hangup",
                "hangup_provider_code": 4000,
            }
        if finished is None:
            created = parse_timestamp(execution["created_at"])
            seconds_after = ring + conversation + rng.uniform(1, 30)
            if rng.random() < _RAN_LATER_SHARE:
                seconds_after += rng.random() * _RAN_LATER_MAX_SECONDS
            finished = self._settle(created, created + timedelta(seconds=seconds_after))
        self._set_updated(execution, finished)

    def _settle(self, created: datetime, wanted: datetime) -> datetime:
        """Cap a generated `updated_at` at `now`, but never before the call's own `created_at`."""
        return max(created, min(wanted, self.now))

    @staticmethod
    def _set_updated(execution: dict[str, Any], moment: datetime) -> None:
        stamp = format_timestamp(moment)
        execution["updated_at"] = stamp
        run = execution.get("batch_run_details")
        if run is not None:
            run["status"] = execution["status"]
            run["updated_at"] = stamp

    def _pick_batch(self, agent_id: str, created: datetime) -> str | None:
        """Put ~20% of calls in the agent's latest campaign that had started by then."""
        if self.rng.random() >= _BATCH_SHARE:
            return None
        stamp = format_timestamp(created)
        started = [
            b for b in self._agent_batches[agent_id] if self.batches[b]["scheduled_at"] <= stamp
        ]
        return max(started, key=lambda b: self.batches[b]["scheduled_at"]) if started else None

    @staticmethod
    def _duration_is_text(call_id: str) -> bool:
        # Half the calls by id parity, so a call keeps its shape when it completes later.
        return int(call_id[-1], 16) % 2 == 1

    def _duration_value(self, call_id: str, seconds: int) -> int | str:
        return str(seconds) if self._duration_is_text(call_id) else seconds

    def _provider_call_id(self, provider: str) -> str:
        if provider == "twilio":
            return f"CA{self.rng.getrandbits(128):032x}"
        return self._new_uuid()

    def _phone_number(self, country: str) -> str:
        return f"{country}{_between(self.rng, 6_000_000_000, 9_999_999_999)}"

    def _new_uuid(self) -> str:
        """Same text as `str(uuid.UUID(int=rng.getrandbits(128), version=4))`, at half the cost."""
        bits = (self.rng.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET
        text = f"{bits:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    def _build_corpus(self, size: int) -> str:
        """Dialogue text that transcripts are cut from (ASCII, so characters equal bytes)."""
        rng = random.Random(self.seed ^ 0x7A5C)  # noqa: S311 - reproducible text, not secrets
        lines: list[str] = []
        length = 0
        while length < size:
            line = _pick(rng, _TRANSCRIPT_LINES).format(name=_pick(rng, _FIRST_NAMES)) + "\n"
            lines.append(line)
            length += len(line)
        text = "".join(lines)
        return text + text  # doubled so any slice of up to `size` characters fits without wrapping

    def _transcript(self) -> str:
        low, high = self.transcript_bytes
        length = _between(self.rng, low, high)
        start = self._corpus.find("assistant:", self.rng.randrange(len(self._corpus) // 2))
        return self._corpus[start : start + length]

    def _refresh_batch_counts(self, batch_ids: Iterable[str] | None = None) -> None:
        """Recompute batch status and counters from the batch's calls."""
        for batch_id in self.batches if batch_ids is None else batch_ids:
            batch = self.batches[batch_id]
            members = [self.executions[call_id] for call_id in self._batch_members[batch_id]]
            counts = Counter(call["status"] for call in members)
            batch["execution_status"] = dict(sorted(counts.items()))
            if not batch["valid_contacts"]:
                batch["valid_contacts"] = len(members)
                batch["total_contacts"] = len(members) + (len(members) // 10)
            if not members or counts.keys() == {"prepared"}:
                batch["status"] = "scheduled"
            elif any(status in PENDING_STATUSES for status in counts):
                batch["status"] = "queued"
            else:
                batch["status"] = "executed"
            if members:
                batch["updated_at"] = max(call["updated_at"] for call in members)

    # ------------------------------------------------------------------ public API

    @property
    def agent_ids(self) -> list[str]:
        """Agent ids in creation order."""
        return list(self.agents)

    def pending_ids(self) -> set[str]:
        """Ids of calls whose status can still change."""
        with self.lock:
            return set(self._pending)

    def hidden_ids(self) -> set[str]:
        """Ids of calls that exist but are not listed or served yet (see `add_calls(hidden=)`)."""
        with self.lock:
            return set(self._hidden)

    def add_calls(
        self,
        n: int,
        *,
        agent_id: str | None = None,
        created_at: datetime | None = None,
        status: str | None = None,
        hidden: bool = False,
    ) -> list[str]:
        """Add `n` new calls and return their ids.

        Without `created_at` each call is stamped by `server_now` (strictly increasing,
        never before `world.now`); with it, all `n` share that instant. Without `agent_id` the
        calls are dealt round-robin over the agents. `status` defaults to "completed"; a pending
        status gives a call that `complete_pending` can later finish. `hidden` calls are listed
        late: absent from the paged endpoint (data and total) and 404 by id until `reveal`.
        """
        status = status or "completed"
        if status not in ALL_STATUSES:
            msg = f"unknown status {status!r}"
            raise ValueError(msg)
        if agent_id is not None and agent_id not in self.agents:
            msg = f"unknown agent {agent_id!r}"
            raise KeyError(msg)
        with self.lock:
            new_ids = []
            for _ in range(n):
                owner = agent_id
                if owner is None:
                    owner = self.agent_ids[self._next_agent % len(self.agents)]
                    self._next_agent += 1
                moment = created_at.astimezone(timezone.utc) if created_at else self._tick()
                # New calls are not part of a campaign, so batch listings stay as generated.
                new_ids.append(
                    self._create_call(owner, moment, status, batch_id=None, hidden=hidden)
                )
            self._changed()
            return new_ids

    def reveal(self, ids: Iterable[str] | None = None) -> list[str]:
        """List hidden calls (all, or those of `ids` that are hidden); return the ids revealed.

        Their `created_at` and `updated_at` stay as they were, so a revealed call can land
        inside a window a client has already read.
        """
        with self.lock:
            if ids is None:
                targets = sorted(self._hidden)
            else:
                ids = list(dict.fromkeys(ids))  # a repeated id must not be indexed twice
                self._require_known(ids)
                targets = [call_id for call_id in ids if call_id in self._hidden]
            for call_id in targets:
                execution = self.executions[call_id]
                keys = self._index[execution["agent_id"]].keys
                insort(keys, (execution["created_at"], call_id))
                self._hidden.discard(call_id)
            self._changed()
            return targets

    def is_listed(self, call_id: str) -> bool:
        """Whether the API shows this call: it exists and is not hidden. Call under `lock`."""
        return call_id in self.executions and call_id not in self._hidden

    def _require_known(self, ids: Iterable[str]) -> None:
        unknown = [call_id for call_id in ids if call_id not in self.executions]
        if unknown:
            msg = f"unknown execution ids: {unknown}"
            raise KeyError(msg)

    def complete_pending(
        self, *, ids: Iterable[str] | None = None, status: str | None = None
    ) -> list[str]:
        """Move pending calls (all, or those of `ids` that are pending) to a final status.

        Pending includes `prepared`, `call-disconnected`, undocumented statuses and calls put
        back to `scheduled` by `retry_calls`. Without `status`, most become "completed" and
        some "no-answer", "busy" or "failed" (with an error message); `status` (any of
        FINAL_STATUSES) forces the outcome. A call that talked gets its transcript, cost,
        recording and perhaps `extracted_data`. `updated_at` becomes the server's current time;
        `created_at` never changes. Returns the ids that changed, in the order they were
        processed. Raises ValueError for a `status` that is not final, KeyError for an unknown id.
        """
        if status is not None and status not in FINAL_STATUSES:
            msg = f"complete_pending needs a final status, not {status!r}"
            raise ValueError(msg)
        ids = None if ids is None else list(ids)
        with self.lock:
            if ids is None:
                targets = sorted(
                    self._pending, key=lambda call_id: self.executions[call_id]["created_at"]
                )
            else:
                targets = [call_id for call_id in ids if call_id in self._pending]
                self._require_known(ids)
            finished = self._tick()
            touched_batches = set()
            for call_id in targets:
                execution = self.executions[call_id]
                outcome = status or self.rng.choices(_COMPLETION_STATUSES, _COMPLETION_WEIGHTS)[0]
                self._finish_call(execution, outcome, finished=finished)
                self._pending.discard(call_id)
                if execution.get("batch_id"):
                    touched_batches.add(execution["batch_id"])
            self._changed(touched_batches)
            return targets

    def disconnect_calls(self, ids: Iterable[str]) -> list[str]:
        """Drop the line of moving calls: `call-disconnected`, with every post-call field empty.

        As Bolna does the instant a call ends: conversation duration, total cost and cost
        breakdown are 0, transcript, recording and `extracted_data` are null. The call stays
        pending, so `complete_pending` fills them in later. `updated_at` becomes the server's
        current time. Returns the ids, in order. Raises KeyError for an unknown id, ValueError
        for a call that is final or already disconnected (nothing changes then).
        """
        ids = list(dict.fromkeys(ids))
        with self.lock:
            self._require_known(ids)
            refused = [
                call_id
                for call_id in ids
                if call_id not in self._pending
                or self.executions[call_id]["status"] == "call-disconnected"
            ]
            if refused:
                msg = f"only moving calls can be disconnected: {refused}"
                raise ValueError(msg)
            moment = self._tick()
            for call_id in ids:
                execution = self.executions[call_id]
                self._dial(execution)
                self._hang_up(execution)
                self._set_updated(execution, moment)
            self._changed(self._batches_of(ids))
            return ids

    def retry_calls(
        self, ids: Iterable[str], after: timedelta = timedelta(minutes=30)
    ) -> list[str]:
        """Auto-retry: put failed attempts back to `scheduled`, keeping each call's id.

        Each call must be in one of RETRYABLE_FINAL_STATUSES. It gains (or updates)
        `retry_count` (+1), `retry_history` (one entry per earlier attempt: status,
        updated_at, error_message) and `scheduled_at` (server time + `after`); the attempt's
        outcome (hang-up, costs, error message, provider call id) is cleared, the rest of
        the call (created_at, numbers, batch, context) is kept. It becomes pending again, so
        `complete_pending` can finish it. `updated_at` becomes the server's current time.
        Returns the ids, in order. Raises KeyError for an unknown id, ValueError for a call
        not in a retryable status (nothing changes then).
        """
        ids = list(dict.fromkeys(ids))
        with self.lock:
            self._require_known(ids)
            refused = [
                call_id
                for call_id in ids
                if self.executions[call_id]["status"] not in RETRYABLE_FINAL_STATUSES
            ]
            if refused:
                msg = f"only {', '.join(RETRYABLE_FINAL_STATUSES)} calls can be retried: {refused}"
                raise ValueError(msg)
            moment = self._tick()
            for call_id in ids:
                execution = self.executions[call_id]
                attempt = {name: execution[name] for name in _RETRY_HISTORY_FIELDS}
                execution["retry_history"] = [*execution.get("retry_history", ()), attempt]
                execution["retry_count"] = execution.get("retry_count", 0) + 1
                execution["scheduled_at"] = format_timestamp(moment + after)
                execution["status"] = "scheduled"
                self._clear_outcome(execution)
                execution["telephony_data"].update(
                    provider_call_id=None, duration=None, ring_duration=None, post_dial_delay=None
                )
                run = execution.get("batch_run_details")
                if run is not None:
                    run["retried"] += 1
                self._set_updated(execution, moment)
                self._pending.add(call_id)
            self._changed(self._batches_of(ids))
            return ids

    def _batches_of(self, ids: Iterable[str]) -> set[str]:
        return {self.executions[c]["batch_id"] for c in ids if self.executions[c].get("batch_id")}

    def _changed(self, batch_ids: Iterable[str] = ()) -> None:
        """After every mutation: batch counters follow their calls, cached listings go stale."""
        self._refresh_batch_counts(batch_ids)
        self.version += 1

    def server_now(self) -> datetime:
        """Bolna's idea of the current time: `clock()` shifted by `clock_offset`, aware UTC."""
        return self.clock().astimezone(timezone.utc) + self.clock_offset

    def update_calls(self, ids: Iterable[str], **fields: Any) -> dict[str, str]:
        """Set top-level `fields` on each call, as post-call processing does after a final status.

        E.g. `extracted_data`, `transcript`, `total_cost`, `telephony_data`. `updated_at` (also
        in `batch_run_details`) moves to the server's current time; `status` and `created_at`
        do not. Returns each id's new `updated_at`. Raises ValueError for a field it must not
        change (id, agent_id, created_at, status, updated_at, batch_id), KeyError for an
        unknown id.
        """
        refused = sorted(_NOT_UPDATABLE & fields.keys())
        if refused:
            msg = f"update_calls cannot change {', '.join(refused)}"
            raise ValueError(msg)
        ids = list(dict.fromkeys(ids))
        with self.lock:
            self._require_known(ids)
            moment = self._tick()
            touched_batches = set()
            for call_id in ids:
                execution = self.executions[call_id]
                # A copy per call, so no two calls (nor the caller) share one nested dict.
                execution.update(copy.deepcopy(fields))
                self._set_updated(execution, moment)
                if execution.get("batch_id"):
                    touched_batches.add(execution["batch_id"])
            self._changed(touched_batches)
            return dict.fromkeys(ids, format_timestamp(moment))

    def remove_calls(self, ids: Iterable[str]) -> None:
        """Delete calls as if Bolna had: gone from listings, lookups, batches and pending calls.

        Raises KeyError for an unknown id (nothing is removed then).
        """
        ids = list(dict.fromkeys(ids))
        with self.lock:
            self._require_known(ids)
            touched_batches = set()
            for call_id in ids:
                execution = self.executions.pop(call_id)
                if call_id in self._hidden:
                    self._hidden.discard(call_id)
                else:
                    keys = self._index[execution["agent_id"]].keys
                    del keys[bisect_left(keys, (execution["created_at"], call_id))]
                self._pending.discard(call_id)
                batch_id = execution.get("batch_id")
                if batch_id:
                    self._batch_members[batch_id].remove(call_id)
                    touched_batches.add(batch_id)
            self._changed(touched_batches)

    def _tick(self) -> datetime:
        """The time for a mutation: the server clock, never before `now`, always moving forward."""
        moment = max(
            self.server_now(),
            self.now,
            self._last_tick + timedelta(microseconds=1),
        )
        self._last_tick = moment
        return moment

    def current_time(self) -> datetime:
        """The world's latest moment (`now`, or the last mutation), used for "humanized" ages.

        Not the wall clock, so listings stay the same from one request to the next.
        """
        return self._last_tick

    # ------------------------------------------------------------------ reads for the server

    def list_executions(  # noqa: PLR0913 - mirrors the endpoint's query parameters
        self,
        agent_id: str,
        *,
        created_from: str | None = None,
        created_to: str | None = None,
        filters: dict[str, Any] | None = None,
        page_number: int = 1,
        page_size: int = 20,
    ) -> tuple[int, list[dict[str, Any]]]:
        """One page of an agent's calls in `list_order`, and how many calls match in total.

        `created_from` / `created_to` are inclusive bounds on `created_at`, written like
        `format_timestamp`, so they compare as strings at full microsecond precision. `filters`
        keys: status, call_type, provider, answered_by_voice_mail (bool), batch_id. In the
        default "updated_at" order the newest `updated_at` comes first, ties by id (highest
        first); the sorted window is cached until the next mutation, so paging through it
        stays cheap and stable. Call under `lock`.
        """
        if self.list_order not in _LIST_ORDERS:
            msg = f"list_order must be one of {', '.join(_LIST_ORDERS)}, not {self.list_order!r}"
            raise ValueError(msg)
        keys = self._index[agent_id].keys
        low = 0 if created_from is None else bisect_left(keys, (created_from,))
        high = len(keys) if created_to is None else bisect_right(keys, (created_to, _MAX_ID))
        offset = (page_number - 1) * page_size
        if self.list_order == "created_at" and not filters:
            total = max(0, high - low)
            # Newest first: position `offset` counts back from the end of the slice.
            stop = high - offset
            start = max(low, stop - page_size)
            chosen = (
                [self.executions[call_id] for _, call_id in reversed(keys[start:stop])]
                if stop > low
                else []
            )
            return total, chosen
        filters = filters or {}
        cache_key = (agent_id, created_from, created_to, tuple(sorted(filters.items())),
                     self.list_order)  # fmt: skip
        listing = self._cached_listing(
            cache_key, lambda: self._sort_window(keys[low:high], filters)
        )
        return len(listing), listing[offset : offset + page_size]

    def _cached_listing(
        self, cache_key: tuple[Any, ...], build: Callable[[], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """The listing `build` makes, kept until the world changes (its `version` moves)."""
        if self._listings_version != self.version:
            self._listings.clear()
            self._listings_version = self.version
        listing = self._listings.get(cache_key)
        if listing is None:
            listing = self._listings[cache_key] = build()
            if len(self._listings) > _CACHED_LISTINGS:
                self._listings.popitem(last=False)
        else:
            self._listings.move_to_end(cache_key)
        return listing

    def _sort_window(
        self, window: list[tuple[str, str]], filters: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """A window's calls (oldest created first) that match `filters`, in `list_order`."""
        listing = [self.executions[call_id] for _, call_id in window]
        if filters:
            listing = [call for call in listing if _matches(call, filters)]
        if self.list_order == "updated_at":
            listing.sort(key=_last_run, reverse=True)
        else:
            listing.reverse()
        return listing

    def batch_executions(self, batch_id: str) -> list[dict[str, Any]]:
        """A batch's calls, newest first. Call under `lock`."""
        calls = [self.executions[call_id] for call_id in self._batch_members[batch_id]]
        return sorted(calls, key=lambda call: (call["created_at"], call["id"]), reverse=True)

    def agent_batches(self, agent_id: str) -> list[dict[str, Any]]:
        """An agent's batches as served, newest first, with ages relative to the clock."""
        now = self.current_time()
        served = []
        for batch_id in reversed(self._agent_batches[agent_id]):
            batch = {
                key: value for key, value in self.batches[batch_id].items() if key != "agent_id"
            }
            batch["humanized_created_at"] = humanize_age(parse_timestamp(batch["created_at"]), now)
            served.append(batch)
        return served

    def account(self) -> dict[str, Any]:
        """The `/user/me` object; concurrency counts calls ringing or in progress right now."""
        busy = sum(
            1
            for call_id in self._pending
            if self.executions[call_id]["status"] in ("ringing", "in-progress")
        )
        return {**self.user, "concurrency": {"max": 10, "current": min(busy, 10)}}

    def usage(self, created_from: str, created_to: str) -> dict[str, Any]:
        """Usage of the listed calls created in [from, to], summed as Bolna's usage endpoints do.

        Costs in cents, as the calls carry them; telephony cost is the `network` part. Bounds
        are written like `format_timestamp` and compare as strings. Call under `lock`.
        """
        calls = [
            call
            for call_id, call in self.executions.items()
            if call_id not in self._hidden and created_from <= call["created_at"] <= created_to
        ]

        def part(call: dict[str, Any], name: str) -> float:
            return float((call.get("cost_breakdown") or {}).get(name) or 0.0)

        def duration(call: dict[str, Any]) -> float:
            return float(call.get("conversation_duration", call.get("conversation_time")) or 0.0)

        llm = round(sum(part(call, "llm") for call in calls), 3)
        synthesizer = round(sum(part(call, "synthesizer") for call in calls), 3)
        transcriber = round(sum(part(call, "transcriber") for call in calls), 3)
        seconds = round(sum(duration(call) for call in calls), 3)
        return {
            "total_records": len(calls),
            "total_duration": seconds,
            "total_cost": round(sum(float(call.get("total_cost") or 0.0) for call in calls), 3),
            "total_platform_cost": round(sum(part(call, "platform") for call in calls), 3),
            "total_telephony_cost": round(sum(part(call, "network") for call in calls), 3),
            "status_map": dict(sorted(Counter(call["status"] for call in calls).items())),
            "synthesizer_cost_map": {
                "elevenlabs": {
                    "eleven_turbo_v2_5": {"characters": seconds * 12, "cost": synthesizer}
                }
            },
            "transcriber_cost_map": {
                "deepgram": {"nova-2": {"duration": seconds, "cost": transcriber}}
            },
            "llm_cost_map": {
                "cost": llm,
                "tokens": {"gpt-4o-mini": {"input": len(calls) * 900, "output": len(calls) * 200}},
            },
        }

    def execution_log(self, call_id: str) -> dict[str, Any]:
        """The raw log of one call (same content on every request, derived from its id)."""
        execution = self.executions[call_id]
        lines: list[dict[str, Any]] = []
        transcript = execution.get("transcript")
        if transcript:
            rng = random.Random(call_id)  # noqa: S311 - same log on every request
            moment = parse_timestamp(execution["created_at"])
            turns = [turn for turn in transcript.splitlines() if turn][:6]
            for turn in turns:
                speaker, _, text = turn.partition(": ")
                moment += timedelta(seconds=rng.uniform(0.5, 4))
                if speaker == "user":
                    lines.append(_log_line(moment, "response", "transcriber", "deepgram", text))
                    lines.append(_log_line(moment, "request", "llm", "openai", text))
                else:
                    lines.append(_log_line(moment, "response", "llm", "openai", text))
                    lines.append(_log_line(moment, "request", "synthesizer", "elevenlabs", text))
        return {"status": "success", "data": lines}


def _log_line(
    moment: datetime, direction: str, component: str, provider: str, text: str
) -> dict[str, Any]:
    return {
        "created_at": format_timestamp(moment),
        "type": direction,
        "component": component,
        "provider": provider,
        "data": text,
    }


def _matches(execution: dict[str, Any], filters: dict[str, Any]) -> bool:
    telephony = execution.get("telephony_data") or {}
    for name, wanted in filters.items():
        actual = telephony.get(name) if name in ("call_type", "provider") else execution.get(name)
        if actual != wanted:
            return False
    return True
