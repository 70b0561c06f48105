"""Which Bolna account each request is for, and the one place that knows each account's key.

An agency's parent key lists its sub-accounts with their keys (`GET /sub-accounts/all`); a
sub-account's agents, calls and batches answer only to its own `sa-` key. The account is one
more level of the partition context (`{"sub_account_id": ..., "agent_id": ...}`; absent for
the parent's own data, so state written before sub-accounts keeps working). Streams pass
contexts; `AccountKeys.authorize` turns a context into the key, just before a request is
sent. Keys live in this object's memory for one run: never in a context, a record, the state
or a log line. Every account's requests share the run's one pace (`limits.Pacing`): Bolna
does not say whether sub-accounts share the organisation's limit, so the tap assumes they do.
"""

from __future__ import annotations

import threading
import typing as t
from dataclasses import dataclass

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import requests

SUB_ACCOUNT_ID = "sub_account_id"
SUB_ACCOUNTS_PATH = "/sub-accounts/all"
# Never copied out of a listing: the key of each sub-account.
KEY_FIELD = "api_key"


@dataclass(frozen=True)
class Account:
    """One account of the run: the parent (`sub_account_id` None) or one sub-account."""

    sub_account_id: str | None = None
    name: str | None = None

    @property
    def context(self) -> dict[str, str]:
        """Its part of a partition context: nothing for the parent account."""
        return {} if self.sub_account_id is None else {SUB_ACCOUNT_ID: self.sub_account_id}

    @property
    def label(self) -> str:
        """How log lines name it."""
        if self.sub_account_id is None:
            return "the parent account"
        return f"sub-account {self.name or 'unnamed'} ({self.sub_account_id})"


PARENT = Account()


class AccountKeys:
    """The accounts of a run and their keys, held in memory only, for this run.

    `accounts()` lists the sub-accounts once (with the parent key) when `include_sub_accounts`
    is set; `refuse` drops an account whose key Bolna did not accept, so its later requests
    are never sent.
    """

    def __init__(
        self,
        parent_key: str,
        *,
        include_sub_accounts: bool = False,
        sub_account_ids: list[str] | None = None,
    ) -> None:
        """`sub_account_ids`: only these sub-accounts (default: every one listed)."""
        self._parent_key = parent_key
        self.include_sub_accounts = include_sub_accounts
        self._wanted = list(dict.fromkeys(sub_account_ids or []))
        self._keys: dict[str, str] = {}
        self._listing: list[dict[str, t.Any]] | None = None
        self._lock = threading.Lock()

    def sub_accounts(
        self, get_json: Callable[[str, dict[str, t.Any]], t.Any]
    ) -> list[dict[str, t.Any]]:
        """The wanted sub-accounts as listed, keys removed (one request per run, cached).

        `get_json` sends a GET with the parent key. Without `include_sub_accounts`: none, and
        no request.
        """
        if not self.include_sub_accounts:
            return []
        with self._lock:
            if self._listing is None:
                listed = get_json(SUB_ACCOUNTS_PATH, {})
                self._listing = [self._keep_key(item) for item in listed or ()]
            wanted = set(self._wanted)
            return [dict(item) for item in self._listing if not wanted or item["id"] in wanted]

    def _keep_key(self, item: Mapping[str, t.Any]) -> dict[str, t.Any]:
        """The listing without its key; the key stays here."""
        row = {name: value for name, value in item.items() if name != KEY_FIELD}
        key = item.get(KEY_FIELD)
        if isinstance(key, str) and key:
            self._keys[str(row["id"])] = key
        return row

    def unlisted(self) -> list[str]:
        """Configured `sub_account_ids` that Bolna did not list (deleted, or mistyped)."""
        listed = {item["id"] for item in self._listing or ()}
        return [wanted for wanted in self._wanted if wanted not in listed]

    def accounts(self, get_json: Callable[[str, dict[str, t.Any]], t.Any]) -> list[Account]:
        """The parent account, then each wanted sub-account, in Bolna's order."""
        return [PARENT] + [
            Account(str(item["id"]), item.get("name")) for item in self.sub_accounts(get_json)
        ]

    def refuse(self, sub_account_id: str) -> None:
        """Forget a sub-account's key (Bolna refused it): none of its requests go out."""
        with self._lock:
            self._keys.pop(sub_account_id, None)

    def key_for(self, context: Mapping[str, t.Any] | None) -> str:
        """The key for a request in `context`: its sub-account's, else the parent's."""
        sub_account_id = (context or {}).get(SUB_ACCOUNT_ID)
        if sub_account_id is None:
            return self._parent_key
        key = self._keys.get(str(sub_account_id))
        if key is None:
            msg = f"no usable key for sub-account {sub_account_id}"
            raise KeyError(msg)
        return key

    def authorize(
        self, prepared: requests.PreparedRequest, context: Mapping[str, t.Any] | None
    ) -> None:
        """Put the key of the request's account on it (the only place a key is written)."""
        prepared.headers["Authorization"] = f"Bearer {self.key_for(context)}"

    def secrets(self) -> list[str]:
        """Every key held, for a last check that none is about to be written anywhere."""
        return [self._parent_key, *self._keys.values()]
