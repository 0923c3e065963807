"""New API routes its web console calls that relaygate does not serve (issue 12: "routes
you truly cannot support answer a New API-style envelope and are listed in docs/ with
why").

Each answers HTTP 200 ``{"success": false, "message": "Not supported by relaygate: ..."}``
after the same authentication New API's route has, so a console shows a clear message
instead of breaking on a 404 page, and a script sees why. The list is the NA-0718 classic
console's calls (tests/fixtures/newapi_console_calls.json) minus what relaygate serves;
docs/api.md "Not supported" gives the reasons in prose. Registered before the ``{id}``
routes, so ``/api/user/aff`` is not taken for a user id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from relaygate.api.auth import Level
from relaygate.api.envelope import ApiFail
from relaygate.api.routing import Ctx, Handler, RouteTable
from relaygate.api.tokens import MSG_KEY_SHOWN_ONCE

routes = RouteTable()

PREFIX = "Not supported by relaygate: "
P, U, A, R = Level.PUBLIC, Level.USER, Level.ADMIN, Level.ROOT

TWO_FACTOR_AND_RESET = "no 2FA, passkeys, secure verification or password reset by email; an admin sets a new password (PUT /api/user/)"
EMAIL = "relaygate sends no email (no verification codes, no reset links)"
OAUTH = "no OAuth or third-party login; log in with username and password"
SETUP = "create the first root user with `relaygate admin create-user --role 100`"
UPDATES = "relaygate does not check for releases"
AFFILIATE = "no affiliate codes, invitations or check-in rewards"
PAYMENTS = "no top-up, payment, subscription or redemption codes; an admin adds quota (POST /api/user/manage add_quota)"
DELETE_SELF = "accounts are deleted by an admin (DELETE /api/user/{id}), keeping their usage logs"
SETTINGS = "per-user console settings are not stored server-side; keep them in the browser"
CHANNEL_KEY = "channel keys are write-only and never shown again"
CHANNEL_OPS = "no channel tags, copies, balance checks, upstream model fetch, multi-key, Ollama or affinity tools; edit channels with PUT /api/channel/"
DEPLOYMENTS = "no model deployments"
MODEL_METADATA = "no model metadata, vendors or prefill groups; prices are options (ModelRatio, ModelPrice) set with `relaygate admin set-option`"
RATIO_SYNC = "no ratio sync from other instances; set ModelRatio with `relaygate admin set-option`"
PERFORMANCE = "no in-process performance tools; use /metrics"
OPTIONS = "options are changed with `relaygate admin set-option` (validated, pushed to every relay)"
LOG_DELETE = (
    "usage logs are the billing record; old months are dropped by partition (docs/operations)"
)
DATA_BY_USER = "per-user charts: use GET /api/data/?username="
KEYS = MSG_KEY_SHOWN_ONCE

UNSUPPORTED: list[tuple[str, str, Level, str]] = [
    ("POST", "/api/channel/batch", A, CHANNEL_OPS),
    ("POST", "/api/channel/batch/tag", A, CHANNEL_OPS),
    ("POST", "/api/channel/copy/{id}", A, CHANNEL_OPS),
    ("POST", "/api/channel/fetch_models", A, CHANNEL_OPS),
    ("GET", "/api/channel/fetch_models", A, CHANNEL_OPS),
    ("GET", "/api/channel/fetch_models/", A, CHANNEL_OPS),
    ("GET", "/api/channel/fetch_models/{id}", A, CHANNEL_OPS),
    ("POST", "/api/channel/fix", A, CHANNEL_OPS),
    ("POST", "/api/channel/multi_key/manage", A, CHANNEL_OPS),
    ("DELETE", "/api/channel/ollama/delete", A, CHANNEL_OPS),
    ("GET", "/api/channel/ollama/version/{id}", A, CHANNEL_OPS),
    ("PUT", "/api/channel/tag", A, CHANNEL_OPS),
    ("POST", "/api/channel/tag/disabled", A, CHANNEL_OPS),
    ("POST", "/api/channel/tag/enabled", A, CHANNEL_OPS),
    ("GET", "/api/channel/tag/models", A, CHANNEL_OPS),
    ("GET", "/api/channel/update_balance", A, CHANNEL_OPS),
    ("GET", "/api/channel/update_balance/{id}/", A, CHANNEL_OPS),
    ("POST", "/api/channel/upstream_updates/apply", A, CHANNEL_OPS),
    ("POST", "/api/channel/upstream_updates/apply_all", A, CHANNEL_OPS),
    ("POST", "/api/channel/upstream_updates/detect", A, CHANNEL_OPS),
    ("POST", "/api/channel/upstream_updates/detect_all", A, CHANNEL_OPS),
    ("POST", "/api/channel/{id}/codex/refresh", A, CHANNEL_OPS),
    ("GET", "/api/channel/{id}/codex/usage", A, CHANNEL_OPS),
    ("POST", "/api/channel/{id}/key", R, CHANNEL_KEY),
    ("GET", "/api/custom-oauth-provider/", R, OAUTH),
    ("POST", "/api/custom-oauth-provider/", R, OAUTH),
    ("POST", "/api/custom-oauth-provider/discovery", R, OAUTH),
    ("DELETE", "/api/custom-oauth-provider/{id}", R, OAUTH),
    ("PUT", "/api/custom-oauth-provider/{id}", R, OAUTH),
    ("GET", "/api/data/users", A, DATA_BY_USER),
    ("POST", "/api/deployments", A, DEPLOYMENTS),
    ("GET", "/api/deployments/", A, DEPLOYMENTS),
    ("GET", "/api/deployments/available-replicas", A, DEPLOYMENTS),
    ("POST", "/api/deployments/batch_delete", A, DEPLOYMENTS),
    ("GET", "/api/deployments/check-name", A, DEPLOYMENTS),
    ("GET", "/api/deployments/hardware-types", A, DEPLOYMENTS),
    ("POST", "/api/deployments/price-estimation", A, DEPLOYMENTS),
    ("GET", "/api/deployments/search", A, DEPLOYMENTS),
    ("GET", "/api/deployments/settings", A, DEPLOYMENTS),
    ("POST", "/api/deployments/settings/test-connection", A, DEPLOYMENTS),
    ("DELETE", "/api/deployments/{id}", A, DEPLOYMENTS),
    ("GET", "/api/deployments/{id}", A, DEPLOYMENTS),
    ("PUT", "/api/deployments/{id}", A, DEPLOYMENTS),
    ("GET", "/api/deployments/{id}/containers", A, DEPLOYMENTS),
    ("GET", "/api/deployments/{id}/containers/{sub}", A, DEPLOYMENTS),
    ("POST", "/api/deployments/{id}/extend", A, DEPLOYMENTS),
    ("GET", "/api/deployments/{id}/logs", A, DEPLOYMENTS),
    ("PUT", "/api/deployments/{id}/name", A, DEPLOYMENTS),
    ("POST", "/api/deployments/{id}/restart", A, DEPLOYMENTS),
    ("POST", "/api/deployments/{id}/start", A, DEPLOYMENTS),
    ("DELETE", "/api/log/", R, LOG_DELETE),
    ("GET", "/api/log/channel_affinity_usage_cache", A, CHANNEL_OPS),
    ("GET", "/api/models/", A, MODEL_METADATA),
    ("POST", "/api/models/", A, MODEL_METADATA),
    ("PUT", "/api/models/", A, MODEL_METADATA),
    ("GET", "/api/models/missing", A, MODEL_METADATA),
    ("GET", "/api/models/search", A, MODEL_METADATA),
    ("POST", "/api/models/sync_upstream", A, MODEL_METADATA),
    ("GET", "/api/models/sync_upstream/preview", A, MODEL_METADATA),
    ("DELETE", "/api/models/{id}", A, MODEL_METADATA),
    ("GET", "/api/models/{id}", A, MODEL_METADATA),
    ("POST", "/api/oauth/email/bind", P, OAUTH),
    ("GET", "/api/oauth/state", P, OAUTH),
    ("GET", "/api/oauth/telegram/login", P, OAUTH),
    ("GET", "/api/oauth/wechat", P, OAUTH),
    ("POST", "/api/oauth/wechat/bind", P, OAUTH),
    ("GET", "/api/oauth/{id}", P, OAUTH),
    ("PUT", "/api/option/", R, OPTIONS),
    ("DELETE", "/api/option/channel_affinity_cache", R, OPTIONS),
    ("GET", "/api/option/channel_affinity_cache", R, OPTIONS),
    ("POST", "/api/option/migrate_console_setting", R, OPTIONS),
    ("POST", "/api/option/payment_compliance", R, OPTIONS),
    ("POST", "/api/option/rest_model_ratio", R, OPTIONS),
    ("DELETE", "/api/performance/disk_cache", R, PERFORMANCE),
    ("POST", "/api/performance/gc", R, PERFORMANCE),
    ("DELETE", "/api/performance/logs", R, PERFORMANCE),
    ("GET", "/api/performance/logs", R, PERFORMANCE),
    ("POST", "/api/performance/reset_stats", R, PERFORMANCE),
    ("GET", "/api/performance/stats", R, PERFORMANCE),
    ("GET", "/api/prefill_group", A, MODEL_METADATA),
    ("POST", "/api/prefill_group", A, MODEL_METADATA),
    ("PUT", "/api/prefill_group", A, MODEL_METADATA),
    ("DELETE", "/api/prefill_group/{id}", A, MODEL_METADATA),
    ("GET", "/api/ratio_sync/channels", R, RATIO_SYNC),
    ("POST", "/api/ratio_sync/fetch", R, RATIO_SYNC),
    ("GET", "/api/redemption/", A, PAYMENTS),
    ("POST", "/api/redemption/", A, PAYMENTS),
    ("PUT", "/api/redemption/", A, PAYMENTS),
    ("DELETE", "/api/redemption/invalid", A, PAYMENTS),
    ("GET", "/api/redemption/search", A, PAYMENTS),
    ("GET", "/api/redemption/{id}", A, PAYMENTS),
    ("DELETE", "/api/redemption/{id}/", A, PAYMENTS),
    ("GET", "/api/reset_password", P, EMAIL),
    ("POST", "/api/setup", P, SETUP),
    ("GET", "/api/status/github-latest-release", A, UPDATES),
    ("GET", "/api/subscription/admin/plans", A, PAYMENTS),
    ("POST", "/api/subscription/admin/plans", A, PAYMENTS),
    ("PATCH", "/api/subscription/admin/plans/{id}", A, PAYMENTS),
    ("PUT", "/api/subscription/admin/plans/{id}", A, PAYMENTS),
    ("DELETE", "/api/subscription/admin/user_subscriptions/{id}", A, PAYMENTS),
    ("POST", "/api/subscription/admin/user_subscriptions/{id}/invalidate", A, PAYMENTS),
    ("GET", "/api/subscription/admin/users/{id}/subscriptions", A, PAYMENTS),
    ("POST", "/api/subscription/admin/users/{id}/subscriptions", A, PAYMENTS),
    ("POST", "/api/subscription/creem/pay", U, PAYMENTS),
    ("POST", "/api/subscription/epay/pay", U, PAYMENTS),
    ("GET", "/api/subscription/plans", U, PAYMENTS),
    ("GET", "/api/subscription/self", U, PAYMENTS),
    ("PUT", "/api/subscription/self/preference", U, PAYMENTS),
    ("POST", "/api/subscription/stripe/pay", U, PAYMENTS),
    ("POST", "/api/token/batch/keys", U, KEYS),
    ("POST", "/api/user/2fa/backup_codes", U, TWO_FACTOR_AND_RESET),
    ("POST", "/api/user/2fa/disable", U, TWO_FACTOR_AND_RESET),
    ("POST", "/api/user/2fa/enable", U, TWO_FACTOR_AND_RESET),
    ("POST", "/api/user/2fa/setup", U, TWO_FACTOR_AND_RESET),
    ("GET", "/api/user/2fa/status", U, TWO_FACTOR_AND_RESET),
    ("GET", "/api/user/aff", U, AFFILIATE),
    ("POST", "/api/user/aff_transfer", U, AFFILIATE),
    ("POST", "/api/user/amount", U, PAYMENTS),
    ("GET", "/api/user/checkin", U, AFFILIATE),
    ("POST", "/api/user/creem/pay", U, PAYMENTS),
    ("POST", "/api/user/login/2fa", P, TWO_FACTOR_AND_RESET),
    ("GET", "/api/user/oauth/bindings", U, OAUTH),
    ("DELETE", "/api/user/oauth/bindings/{id}", U, OAUTH),
    ("DELETE", "/api/user/passkey", U, TWO_FACTOR_AND_RESET),
    ("GET", "/api/user/passkey", U, TWO_FACTOR_AND_RESET),
    ("POST", "/api/user/passkey/login/begin", P, TWO_FACTOR_AND_RESET),
    ("POST", "/api/user/passkey/login/finish", P, TWO_FACTOR_AND_RESET),
    ("POST", "/api/user/passkey/register/begin", U, TWO_FACTOR_AND_RESET),
    ("POST", "/api/user/passkey/register/finish", U, TWO_FACTOR_AND_RESET),
    ("POST", "/api/user/passkey/verify/begin", U, TWO_FACTOR_AND_RESET),
    ("POST", "/api/user/passkey/verify/finish", U, TWO_FACTOR_AND_RESET),
    ("POST", "/api/user/pay", U, PAYMENTS),
    ("POST", "/api/user/reset", P, TWO_FACTOR_AND_RESET),
    ("DELETE", "/api/user/self", U, DELETE_SELF),
    ("PUT", "/api/user/setting", U, SETTINGS),
    ("POST", "/api/user/stripe/amount", U, PAYMENTS),
    ("POST", "/api/user/stripe/pay", U, PAYMENTS),
    ("POST", "/api/user/topup", U, PAYMENTS),
    ("POST", "/api/user/topup/complete", A, PAYMENTS),
    ("GET", "/api/user/topup/info", U, PAYMENTS),
    ("POST", "/api/user/waffo-pancake/amount", U, PAYMENTS),
    ("POST", "/api/user/waffo-pancake/pay", U, PAYMENTS),
    ("POST", "/api/user/waffo/amount", U, PAYMENTS),
    ("POST", "/api/user/waffo/pay", U, PAYMENTS),
    ("DELETE", "/api/user/{id}/2fa", A, TWO_FACTOR_AND_RESET),
    ("DELETE", "/api/user/{id}/bindings/{sub}", U, OAUTH),
    ("GET", "/api/user/{id}/oauth/bindings", U, OAUTH),
    ("DELETE", "/api/user/{id}/oauth/bindings/{sub}", U, OAUTH),
    ("DELETE", "/api/user/{id}/reset_passkey", A, TWO_FACTOR_AND_RESET),
    ("GET", "/api/vendors/", A, MODEL_METADATA),
    ("POST", "/api/vendors/", A, MODEL_METADATA),
    ("PUT", "/api/vendors/", A, MODEL_METADATA),
    ("DELETE", "/api/vendors/{id}", A, MODEL_METADATA),
    ("GET", "/api/vendors/{id}", A, MODEL_METADATA),
    ("GET", "/api/verification", P, EMAIL),
    ("POST", "/api/verify", U, TWO_FACTOR_AND_RESET),
]


def _refusal(reason: str) -> Handler:
    message = reason if reason == KEYS else PREFIX + reason

    async def not_supported(ctx: Ctx) -> web.StreamResponse:
        raise ApiFail(message)

    return not_supported


def is_unsupported(handler: Callable[[Ctx], Awaitable[web.StreamResponse]]) -> bool:
    return handler.__name__ == "not_supported"


for _method, _path, _level, _reason in UNSUPPORTED:
    routes.route(_method, _path, _level)(_refusal(_reason))
