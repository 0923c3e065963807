"""Management operations shared by the CLI and the management API.

PostgreSQL first, Redis derived. Each write to a user or token row bumps its ``ver`` and, in
the same transaction, adds a ``ledger_outbox`` row; after the commit the row is pushed to its
Redis ledger hash, version-checked (``Accounts.push_*``), and announced, so every relay
honours it on its next request. If that push fails, the change stays committed and the
outbox row stays: the reconciler (``Accounts.run_reconciler``) pushes it once Redis is back,
and the caller hears so in one line (``LedgerPending``). Redis is never written before
PostgreSQL commits, so nothing is ever half-applied or has to be undone. Quota edits never
overwrite ``used``: a top-up adds to ``limit`` (at most once per operation id), and "set
remain to X" becomes ``limit := used_live + X`` (DESIGN.md "The ledger").
"""

from __future__ import annotations

from relaygate.admin.channels import ChannelAdmin
from relaygate.admin.passwords import hash_password, verify_password
from relaygate.admin.rules import (
    CHANNEL_STATUSES,
    LEDGER_ERRORS,
    MAX_OP_ID,
    MAX_QUOTA,
    MAX_TOKEN_NAME_BYTES,
    MSG_LEDGER_DOWN,
    ROLE_ADMIN,
    ROLE_ROOT,
    ROLE_USER,
    ROLES,
    USER_UPDATABLE,
    AdminError,
    CreatedToken,
    LedgerPending,
    check_password,
    check_quota,
    check_token_name,
    check_username,
    normalize_allow_ips,
    normalize_models,
    pending_message,
)
from relaygate.admin.tokens import TokenAdmin
from relaygate.admin.users import UserAdmin


class Admin(UserAdmin, TokenAdmin, ChannelAdmin):
    """Every management operation, for the CLI and the management API."""


__all__ = [
    "CHANNEL_STATUSES",
    "LEDGER_ERRORS",
    "MAX_OP_ID",
    "MAX_QUOTA",
    "MAX_TOKEN_NAME_BYTES",
    "MSG_LEDGER_DOWN",
    "ROLES",
    "ROLE_ADMIN",
    "ROLE_ROOT",
    "ROLE_USER",
    "USER_UPDATABLE",
    "Admin",
    "AdminError",
    "CreatedToken",
    "LedgerPending",
    "check_password",
    "check_quota",
    "check_token_name",
    "check_username",
    "hash_password",
    "normalize_allow_ips",
    "normalize_models",
    "pending_message",
    "verify_password",
]
