"""``GET /llms.txt``: a plain-text guide a coding agent reads to use the API.

The kinds come from ``KIND_ROUTES``, the error codes from the status table and every tier and
limit from the plans the gateway loaded, so the guide cannot drift from what the API does.
"""

from __future__ import annotations

import typing
from collections import defaultdict

import msgspec
from litestar import get
from litestar.enums import MediaType

from gateway.accounts.auth import Scope
from gateway.accounts.store import PASSWORD_LENGTHS
from gateway.context import GatewayContext
from gateway.errors import HTTP_STATUS
from gateway.resources.routes import KIND_ROUTES
from shared.contracts.kinds import Credentials, ResourceKind
from shared.plans import Plans, Tier

_INTRO = """\
# Spinup

> One HTTP call gives a real, isolated Postgres database, Redis cache, MongoDB database, NATS
> JetStream account, S3 bucket or webhook receiver. No account is needed to start: resources
> made without one expire (see Limits); claim them into an account to keep them.

Base URL: {base}
OpenAPI: {base}/schema/openapi.json (each operation's body, headers and the errors it can
return; a readable page at {base}/schema)
Every request and response body is JSON unless said otherwise. Times are ISO 8601 UTC.
"""

_CREATE = """\
## Create a resource

Send `POST /<path>/new`. The body is optional: `{{"name": "..."}}` (a label of your choice: 1-64
letters, digits, spaces and `_ . : / @ -`, not starting or ending with a space; it is echoed as
`name` in the answer). A field that is wrong is a 400 `invalid_request` whose message names it
and says what it takes. Without `Authorization` the resource belongs to nobody and
expires; with `Authorization: Bearer <token>` it belongs to that account, on its plan.

{kinds}

The answer is `201` with these fields:
- `ok`: true.
- `id`: the resource's UUID.
- `kind`: one of {kind_values}.
- `token`: `spn_...`, the secret that manages this resource. KEEP IT (write it next to the
  connection string, e.g. in .env): it is shown only here, and without an account it is the
  only way to show, rotate or delete the resource.
- `connection_url`: the one URL a client library takes (null for storage and webhook).
- `credentials`: `type` (the kind) plus its fields:
{credentials}
- `tier`: the plan tier the resource is on.
- `limits`: the tier's limits for this kind, plus `expires_in` (seconds left; null: permanent).
- `expires_at`: when it is deleted (null: permanent).
- `claim_url`: for resources made without an account, the link that moves them into one
  (see Claim); null otherwise. Opened in a browser it is a page with sign-up and a Claim button.
- `note`: one sentence to show the user.
- `console_url`: the resource's page in the web console (credentials revealed on request, usage,
  expiry, rotate, delete; for a webhook receiver, its live request inspector). The token rides in
  the URL's `#fragment`, which browsers never send to a server. Give this link to your human.

Idempotency: send an `Idempotency-Key` header (1-255 visible ASCII characters; a UUID is ideal)
to make a retry safe. The same key on the same route by the same caller returns the same
resource, as it is now (after a rotation, with the new credentials), with the header
`Idempotent-Replayed: true`, and is not counted against the caps again. Always send one when
you may retry after a timeout. A retry must send the same body: the same key with another body
is a 422 `idempotency_key_mismatch` (use a new key for a new resource); a key whose resource
was since deleted or expired is a 409 `idempotency_key_reused`.
"""

_MANAGE = """\
## Manage a resource

`{token}` is the `spn_` token from the create response, or (with `Authorization: Bearer` of
the account that owns it) the resource's `id`.

- `GET /resources/{token}`: `id, kind, status, tier, name, limits, usage{bytes, quota_bytes,
  measured_at, over_quota, note}, created_at, expires_at, claimed, connection_url,
  credentials, console_url`. Credentials are shown only while `status` is `active`. Usage is
  measured about once a minute; `usage.measured_at` is when its figure last changed, or was
  confirmed at most ten minutes before. When `usage.over_quota` is true the server refuses
  writes until space is released; `usage.note` says how for that kind.
- `DELETE /resources/{token}`: deletes it now; open connections are cut and the credentials
  stop working. Answers `{ok, id, status}`.
- `POST /resources/{token}/rotate`: new credentials; the old ones stop working before it
  answers. Answers `{ok, id, kind, connection_url, credentials, note}`. The token is unchanged.
- `POST /resources/{token}/fork` (Postgres only; optional `{"name", "ttl_seconds"}`, optional
  `Idempotency-Key`): a new database holding a copy of this one's data (tables, sequences,
  indexes, views, functions), with its own token and credentials. The source is only read: its
  sessions go on. Admitted as a create for the caller (caps, rate limits, plan). Answers `201`
  as `POST /db/new` plus `forked_from` (the source's id); another kind is a 400, a deleted
  source 404, an expired one 410.
- `GET /resources/{token}/export[?format=F]`: a complete copy of the data as a file download
  (`Content-Disposition: attachment`), in a format the kind's own tools restore: Postgres
  `custom` (default; `pg_restore --no-owner -d URL file`, pg_restore 18 or later) or `sql`
  (`psql URL -f file`); Redis `jsonl` (one JSON line per key: base64 `key`, `type`, `ttl_ms`,
  `value`); MongoDB `tar` (`<collection>.json` for `mongoimport`, `<collection>.indexes.json`);
  S3 `tar` (the objects, `.spinup-metadata.jsonl`); NATS `jsonl` (stream configs, then
  messages); webhook `jsonl`.
  A bad format is a 400 naming the kind's formats. A stack is exported one backing resource at
  a time with the stack's token: `?resource=db` (its name in the manifest; without it, a 400
  that lists them).
  Per resource at most the plan's `export.per_hour` an hour and `export.concurrent` at once,
  else 429 with `Retry-After`. `spinup export TOKEN -o FILE`.
- At expiry the credentials stop at once but the data is kept for the plan's
  `lifetime.export_grace_seconds` (`GET /plans`; not for stacks): meanwhile `GET
  /resources/{token}` is a 410 whose `agent_action` says to export before a time, and `export`
  still works with the token; then it is deleted for good. `resource.expired` says
  `export_until`.
- `GET /resources?kind=<kind>` (Bearer, read scope): every resource of the account, each as
  in `GET /resources/{token}`.

Webhook receivers: send any method to `credentials.receive_url`; then
- `GET /webhook/{token}/requests`: the captured requests, newest first, one page at a time:
  `limit=N`, and `cursor=` the answer's `next_cursor` for the older ones (null: no more; a page
  may be short while it is set). Filters, all optional, all must hold: `method=POST,PUT`,
  `path_prefix=/stripe`, `header=x-github-event: push` (a substring of a `name: value` line,
  any case), `body=invoice.paid` (a substring of the raw body), `since=`/`until=` (ISO 8601,
  inclusive/exclusive). A bad one is a 400 naming it. Each request: `id, seq, method, path,
  query, query_params, headers` (repeats kept, in order), `body, body_encoding` ("utf-8", or
  "base64" for binary), `size, received_at, client_ip, signature`. `latest_cursor` is where the
  stream picks up. A body over the plan's `max_body_kb` is refused with 413 `payload_too_large`.
- `GET /webhook/{token}/requests/{id}`: one kept request, by the id its sender got back
  (`X-Webhook-Request-Id`).
- `DELETE /webhook/{token}/requests`: forget them all (the receive URL keeps working).
- `GET /webhook/{token}/stream`: Server-Sent Events, one `request` event per request from now
  on, a keep-alive comment now and then, and a final `closed` event when the receiver goes.
  Each event's `id` is a cursor: reconnect with `Last-Event-ID: <id>` (or `?after=<cursor>`,
  e.g. `latest_cursor`) and the kept requests after it come first, oldest first, then live
  ones: none missed, none twice (a `lost` event counts those dropped beyond `requests_kept`).
  `?from_id=<request id>` starts with that kept request.
- To receive them on your machine: `spinup webhook forward TOKEN http://localhost:3000/hooks`
  re-sends each request live (same method, path below the receive URL, query, headers, body)
  and resumes after drops; `spinup webhook replay TOKEN ID --to URL` re-sends one. The server
  never sends captured requests anywhere itself.
- `PUT /webhook/{token}/response` `{"status": 200-599, "headers": {...}, "body": "...",
  "delay_ms": N}`: the receive URL answers with this from now on (HEAD: no body). Refused (400
  `invalid_request`, the field named): hop-by-hop headers, `Content-Length`, `Set-Cookie`, a body
  with 204/205/304, a body over the plan's `max_body_kb`, a delay over its
  `response_delay_ms_max`. `GET` shows it (`custom`, `response`); `DELETE` goes back to `{ok, id}`.
- `PUT /webhook/{token}/verify` `{"scheme": "stripe"|"github"|"slack"|"shopify"|
  "standard-webhooks", "secret": "...", "tolerance_s": N}` (`tolerance_s` optional: the
  provider's 300 s): requests received from now on are read back with `signature: {"status":
  "valid"|"invalid"|"missing", "reason"}`; reasons `signature_mismatch` (wrong secret or body
  changed), `timestamp_outside_tolerance`, `malformed_header`. The secret is stored sealed and
  never shown again. `GET` shows the scheme; `DELETE` turns the check off.
"""

_LIFETIME = """\
## Lifetime: choose it, extend it, be warned

- At create: `{"ttl_seconds": N}` in the body of `POST /<path>/new` (`?ttl_seconds=N` on
  `POST /stacks/new`), within the tier's `lifetime.ttl_min_seconds`..`ttl_max_seconds` (see
  Limits); out of bounds is a 400 `invalid_request` naming them. Without it: the tier's
  `ttl_seconds`. CLI: `spinup db new --ttl 2h`.
- `POST /resources/{token}/extend {"ttl_seconds": N}` adds N seconds to `expires_at`, up to
  `lifetime.total_max_seconds` after creation and `lifetime.extensions` times. Answers `{ok, id,
  expires_at, extensions_used, extensions_left, latest_expires_at, extended_with, note}`; `note`
  says when it reached the end of the lifetime before all N seconds. Past either limit: 402
  `plan_limit_reached`; claim the resource to keep it (see Claim). A stack's backing resources
  are extended with it.
- Notifications: `"notify_url": "https://..."` at create (the answer's `notify_secret`, shown
  once) or `PUT /resources/{token}/notify {"url": "https://..."}` (answers a new `secret`; `url`
  null stops them). Each is a JSON `POST` `{type, timestamp, data{resource_id, kind, name,
  expires_at, ...}}` with `type` one of `resource.expiring` (`lifetime.notify_lead_seconds`
  before expiry; `data.seconds_left`), `resource.over_quota`, `resource.expired`,
  `resource.deleted`, signed per Standard Webhooks: verify `webhook-signature` (`v1,<base64>`)
  as HMAC-SHA256 of `"{webhook-id}.{webhook-timestamp}.{body}"` keyed with the base64 part of the
  `whsec_` secret; dedupe on `webhook-id` (delivery is at least once). Answer 2xx within 5 s;
  anything else, a timeout or a redirect is retried with backoff. The URL must reach the public
  internet (private, loopback and link-local addresses are refused, redirects not followed).
- `GET /resources/{token}/events`: the same notifications as Server-Sent Events (`event` = type,
  `data` = body, `id` for `Last-Event-ID`); the stream ends after `resource.expired` or
  `resource.deleted`, and can still be read after expiry.
"""

_STACKS = """\
## Deploy an app (stacks)

`POST /stacks/new` (multipart/form-data) builds and runs a multi-service app from its source:
field `spinup.yaml` (the manifest) and one tarball per service `build` (a build context with a
Dockerfile; `FROM spinup/base:bookworm` has python3, python3-venv, psycopg2 and redis, and
`python3 -m venv /venv` gives a pip; no registry is reachable, so `FROM python:...` fails with
a note saying so, and a plan without internet installs only what the context carries, e.g.
wheels; a Dockerfile builds `FROM` that image or its own earlier stages, `ADD`s files of its
context only (download with `RUN`), and has no `ONBUILD`), each field named as the manifest's
`build:` value:

    services:
      web: {build: web.tar, port: 8000, env: {GREETING: hi}, depends_on: [worker]}
      worker: {build: worker.tar}
    resources:
      db: {type: postgres}
      cache: {type: redis}

Per service: `build` or `image` (`spinup/base:bookworm` only), `command`, `env`, `port` (its
HTTP port, also given to the container as `PORT`), `depends_on`, `limits{memory_mb, cpu_millis,
pids}`. A small init runs as PID 1 and passes SIGTERM to the app, so stop and restart do not
wait out a grace period.
`resources:` are provisioned like any resource and reach every container as `DATABASE_URL`,
`REDIS_URL` (+ `REDIS_KEY_PREFIX`), `MONGODB_URL`,
`NATS_URL` + `NATS_CREDS`, `S3_*` (and `<NAME>_…` for each). The stack's containers together
hold at most the plan's `stack.connections_per_endpoint` connections to each of those servers;
one more is reset. A bad manifest is a 400
`invalid_manifest` naming the field and line; an upload over the plan's `upload_mb` a 413.
`POST /deploy/new` is the one-service form: file `context` (tarball) or `Dockerfile`, fields
`port`, `env` (KEY=VALUE lines), `command`, `resources` (e.g. `postgres,redis`).

The answer is 202: `id, token, status ("building"), status_url, logs_url, urls{service: url},
resources{name: {kind, id, status, connection_url, credentials}}, tier, limits, expires_at,
claim_url, note`. Poll `GET /resources/{token}` until `stack.status` is `running` (or `failed`,
with `stack.failed_service`, `stack.failure`, `stack.logs_tail`); `stack.services{name:
{status, url, image}}`. Each service with a `port` is served at
`<content base>/apps/<id>/<service>/` (the app sees `X-Forwarded-Prefix`); 503 `app_not_running`
while it is not running. Apps and webhook receivers are served on a host of their own, not the
API's: use the URLs the answers give.

- `GET /resources/{token}/logs` (`?follow=1` to keep streaming): Server-Sent Events, one `log`
  event per line, JSON `{at, source, line}` (`source`: deploy, build:<service>, <service>).
- `POST /stacks/{token}/stop|start|restart|redeploy`: a redeploy may carry a new upload like
  `POST /stacks/new` (same `resources:`); data in the backing resources stays.
- `DELETE /resources/{token}` removes containers, network, images and backing resources.
  Backing resources are listed in `GET /resources` too, with `parent_id` naming their stack.
"""

_ACCOUNTS = """\
## Accounts and auth

- `POST /auth/register {{"email", "password"}}` (a password of {password_min} to
  {password_max} characters) creates an account and answers `{{account, token, expires_at}}`;
  `POST /auth/login` with the same body gives a new session `token` (a JWT). Send it as
  `Authorization: Bearer <token>`.
- `GET /auth/user`: the account, how you authenticated and your plan's limits.
  `POST /auth/logout` ends the session.
- Personal access tokens for tools and agents: `POST /auth/tokens` with
  `{{"name", "scopes": [{scopes}], "expires_in_days"}}` (needs a session) answers with a
  `spp_...` token shown once; `GET /auth/tokens` lists them; `DELETE /auth/tokens/{{id}}`
  revokes one. An access token can do only what its scopes allow.

## Claim

Resources made without an account expire. To keep them, the user needs an account:
1. `POST /auth/register` (or `/auth/login`) to get a Bearer token.
2. `GET /claim/preview?t=<claim token>` shows which resources the `claim_url` would move, and
   their limits before and after. It changes nothing.
3. `POST /claim {{"token": "<claim_url or the value of its t parameter>"}}` with
   `Authorization: Bearer` (provision scope) moves them into the account: no expiry, the
   account plan's limits, the same connection URLs and credentials. A claim link works once;
   sending it again after a failure resumes the same claim.
"""

_ERRORS = """\
## Errors

Every 4xx and 5xx body is
`{{"ok": false, "error": "<code>", "message": "...", "request_id": "...", "agent_action": "..."}}`.
`error` is a stable code to match on; `message` is written for a person. When `agent_action` is
present it is one sentence saying what to do next (claim, delete, register, upgrade, wait):
follow it. Send `request_id` when reporting a problem. 503s and 429s carry `Retry-After`
(seconds): wait that long, then retry with the same `Idempotency-Key`.

{codes}
"""

_LIMITS = """\
## Limits

Every tier and limit below is read from the plans this server runs with; `GET /plans` returns
them as JSON (`{{ok, anonymous_tier, tiers}}`), and `GET /auth/user` shows your own. Requests
without an account use the `{anonymous}` tier; new accounts start on `{account}`.
- `ttl_seconds`: how long a resource lives (null: permanent).
- `caps.active_per_kind`: resources of one kind alive at once; `caps.provisions_per_day`:
  resources made in any rolling 24 hours. Without an account they count per client network.
- `rate_limit.provisions_per_minute`: create calls per minute.
Past a cap the answer is `402 plan_limit_reached`; past the rate limit, `429 rate_limited`.
Sizes are measured regularly against the kind's quota (`usage` in `GET /resources/{{token}}`).
Postgres `storage_mb` counts what you stored, not the empty database; `connections` is per
database and fits a default client pool. The server is PostgreSQL 18; `extensions` lists what
`CREATE EXTENSION` may add (pgvector as `vector`, `pg_trgm`, `citext`, `hstore`, `pgcrypto`,
`uuid-ossp`...), any other fails with `extension "..." is not available`. PostgreSQL 18 also has
`gen_random_uuid()`, `uuidv7()` and `sha256()` built in. NATS `max_payload_kb` is the
`max_payload` the server announces to every client; streams and KV buckets need no `max_bytes`.
NATS `subscriptions_per_connection` holds for each connection: one more subscription gets
`maximum subscriptions exceeded`, on which the client library closes the connection.

{tiers}
"""

_OUTRO = """\
## Other routes

- `GET /healthz`: the process is up. `GET /readyz`: ready to serve (`503` if not).
- `POST /api/v1/database`, `GET /api/v1/database/{id}`: a Neon-compatible claimable Postgres
  API (as `npx get-db` expects).

## Tools

The `spinup-mcp` MCP server (stdio, or streamable HTTP with `--http --port N`) offers these
calls as tools; set `SPINUP_URL` to this base URL and, to work in an account, `SPINUP_TOKEN`
to an access token.
"""


def _kinds_text() -> str:
    return "\n".join(
        f"- `POST /{route.path}/new` ({route.kind.value}): {route.summary}. {route.description}"
        for route in KIND_ROUTES
    )


def _credentials_text() -> str:
    lines = []
    for struct in typing.get_args(Credentials):
        kind = struct.__struct_config__.tag
        fields = ", ".join(f"`{field.name}`" for field in msgspec.structs.fields(struct))
        lines.append(f"  - {kind}: {fields}")
    return "\n".join(lines)


def _codes_text() -> str:
    by_status: dict[int, list[str]] = defaultdict(list)
    for code, status in HTTP_STATUS.items():
        by_status[status].append(f"`{code.value}`")
    return "\n".join(
        f"- {status}: {', '.join(codes)}" for status, codes in sorted(by_status.items())
    )


def _section(struct: msgspec.Struct) -> str:
    return ", ".join(f"{name}={value}" for name, value in msgspec.structs.asdict(struct).items())


def _tier_text(name: str, tier: Tier) -> str:
    if tier.ttl_seconds is None:
        lifetime = "permanent"
    else:
        lifetime = f"{tier.ttl_seconds} s ({tier.ttl_seconds / 3600:g} h), then deleted"
    lines = [
        f"### {name}",
        *([tier.description] if tier.description else []),
        f"- ttl_seconds: {lifetime}",
        f"- caps: {_section(tier.caps)}; rate_limit: {_section(tier.rate_limit)}",
        *([f"- lifetime: {_section(tier.lifetime)}"] if tier.lifetime else []),
        *(f"- {kind.value}: {_section(tier.limits(kind))}" for kind in ResourceKind),
    ]
    return "\n".join(lines)


def llms_text(plans: Plans, base_url: str) -> str:
    """The whole guide, for a server reached at ``base_url`` running ``plans``."""
    kind_values = ", ".join(f"`{route.kind.value}`" for route in KIND_ROUTES)
    tiers = "\n\n".join(_tier_text(name, tier) for name, tier in plans.tiers.items())
    return "\n".join(
        [
            _INTRO.format(base=base_url),
            _CREATE.format(
                kinds=_kinds_text(), kind_values=kind_values, credentials=_credentials_text()
            ),
            _MANAGE,
            _LIFETIME,
            _STACKS,
            _ACCOUNTS.format(
                password_min=PASSWORD_LENGTHS.start,
                password_max=PASSWORD_LENGTHS.stop - 1,
                scopes=", ".join(f'"{scope.value}"' for scope in Scope),
            ),
            _ERRORS.format(codes=_codes_text()),
            _LIMITS.format(anonymous=plans.anonymous_tier, account=plans.account_tier, tiers=tiers),
            _OUTRO,
        ]
    )


@get(
    "/llms.txt",
    media_type=MediaType.TEXT,
    summary="A guide to this API for coding agents",
    description="Plain text (llms.txt): every route, the response fields, auth, claim, errors"
    " and the limits of every tier this server runs with.",
    tags=["docs"],
)
async def llms_txt(ctx: GatewayContext) -> str:
    """``GET /llms.txt``."""
    return llms_text(ctx.plans, ctx.settings.public_url)


LLMS_ROUTES = [llms_txt]
