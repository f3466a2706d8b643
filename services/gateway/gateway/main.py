"""Composition root of the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator
from importlib.metadata import version
from types import FrameType

import structlog
import uvicorn
from litestar import Litestar
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.accounts.routes import AUTH_ROUTES
from gateway.accounts.store import SCHEMA as ACCOUNTS_SCHEMA
from gateway.accounts.store import AccountProjection, Accounts, Passwords
from gateway.admission.ratelimit import RateLimiter
from gateway.claims.routes import CLAIM_ROUTES
from gateway.console.routes import claim_link, console_router, template_config
from gateway.context import GatewayContext
from gateway.errors import document_errors, error_response
from gateway.http.metrics import METRICS_ROUTES
from gateway.http.middleware import request_id_middleware
from gateway.http.openapi import complete_document, openapi_config
from gateway.http.origins import content_origin_guard
from gateway.http.protocol import GatewayHttpToolsProtocol
from gateway.llms.routes import LLMS_ROUTES
from gateway.neon.routes import NEON_ROUTES
from gateway.resources.export_routes import EXPORT_ROUTES
from gateway.resources.fork_routes import FORK_ROUTES
from gateway.resources.lifetime_routes import LIFETIME_ROUTES, end_event_streams
from gateway.resources.notifier import Notifier
from gateway.resources.outbox import OutboxProjection, migrate_outbox
from gateway.resources.routes import ROUTES, dependencies
from gateway.settings import Settings
from gateway.stacks.plumbing import StackPlumbing
from gateway.stacks.routes import stack_routes
from gateway.webhooks.driver import WebhookDriver
from gateway.webhooks.routes import serve_webhook_commands, webhook_routes
from shared.bus import Bus, ensure_stack_stores
from shared.contracts.kinds import ResourceKind
from shared.crypto.sealing import Keyring
from shared.eventlog.projections import (
    ResourceProjection,
    ResourceReadModel,
    rehearse_resource_appends,
)
from shared.eventlog.relay import Relay
from shared.eventlog.schema import WARM_CONNECTION, migrate
from shared.eventlog.store import EventStore
from shared.lifecycle import ResourceLifecycle
from shared.observability.logging import configure_logging
from shared.observability.tracing import configure_tracing, trace_driver
from shared.plans import load_plans
from shared.postgres.pool import open_pool, warm_pool
from shared.redis_handshake import QUIET_HANDSHAKE, open_connections
from shared.runtime import connect_with_retry, in_background, settings_or_exit
from shared.worker import orphan_grace, reconciling

SERVICE = "gateway"
#: Platform Redis connections each gateway process opens before it serves (the pool grows past
#: them when more are in use at once).
REDIS_CONNECTIONS_AT_START = 16
#: How long an idle client connection stays open. Longer than the idle expiry of the clients
#: and load balancers that reuse connections (httpx 5 s, aiohttp 15 s, AWS ALB 60 s): a server
#: that closes first races the client's next request, which then fails unanswered. 75 s is
#: nginx's default, for the same reason.
KEEP_ALIVE_S = 75
log = structlog.get_logger("gateway")


def create_app(settings: Settings) -> Litestar:
    """Build the Litestar app; connections open in its lifespan, not here."""
    plans = load_plans(settings.plans_file)
    keyring = Keyring.from_setting(settings.seal_keys)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await connect_with_retry(
            "platform postgres",
            lambda: open_pool(settings.platform_dsn, size=10),
        )
        await migrate(pool)
        await migrate(pool, ACCOUNTS_SCHEMA)
        await migrate_outbox(pool)
        await warm_pool(pool, WARM_CONNECTION)
        bus = await connect_with_retry(
            "platform nats", lambda: Bus.connect(settings.nats_url, name=SERVICE)
        )
        # One immediate retry on a fresh connection: after a Redis restart every pooled
        # connection is dead, and without it each one fails a request before it is replaced.
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
            **QUIET_HANDSHAKE,
        )
        # Opened at start: grown under the first burst of 16 creates after a start, the pool
        # added about 6 ms to its p50 (bench/results/ab-redis-opened-at-start/). Not waited
        # for: the gateway serves without Redis, its rate limit off, and the pool opens when
        # Redis is back.
        try:
            await open_connections(redis, REDIS_CONNECTIONS_AT_START)
        except RedisError as exc:
            log.warning("gateway.redis.not_opened", error=type(exc).__name__)
        # Live webhook streams: a pool of their own, bounded; past it a new stream gets a 503.
        live = Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=0.5,
            max_connections=settings.max_live_streams,
            **QUIET_HANDSHAKE,
        )
        webhooks = WebhookDriver(
            redis, content_url=settings.content_url, token_key=settings.token_key, live=live
        )
        # One log for everything the gateway appends; each projection picks its own streams.
        store = EventStore(
            pool,
            [ResourceProjection(), AccountProjection(), OutboxProjection()],
            nudge=bus.nudge_relay,
        )
        await rehearse_resource_appends(store)
        resources = ResourceReadModel(pool)
        # The gateway is the webhook kind's worker. Subscribed before the app serves, so a
        # passing /readyz means this replica answers webhook commands too.
        webhook_lifecycle = ResourceLifecycle(
            store,
            keyring,
            trace_driver(webhooks),
            resources=resources,
            create_concurrency=settings.webhook_create_concurrency,
            delete_concurrency=settings.webhook_delete_concurrency,
            orphan_grace=orphan_grace(settings.orphan_grace_s, ResourceKind.WEBHOOK),
        )
        await serve_webhook_commands(bus, webhook_lifecycle)
        accounts = Accounts(
            pool,
            store,
            # Making the hasher hashes once (its dummy hash): in a thread, like every hash.
            await asyncio.to_thread(Passwords),
        )
        # Stack uploads and logs live in JetStream next to the events. Retried like a connection:
        # a process still starting when NATS restarts waits for it instead of failing the start
        # (and, with it, every process of this gateway).
        js = bus.nc.jetstream()
        await connect_with_retry("stack stores", lambda: ensure_stack_stores(js))
        stacks = StackPlumbing()
        relay = Relay(settings.platform_dsn, bus.nc)
        # One process of all the gateways delivers notifications (a lock, like the relay).
        notifier = Notifier(
            settings.platform_dsn,
            store,
            token_key=settings.token_key,
            allowed=settings.notify_allowed_networks,
            retry_s=settings.notify_retry_s,
            poll_s=settings.notify_poll_s,
        )
        app.state.context = GatewayContext(
            settings=settings,
            plans=plans,
            keyring=keyring,
            bus=bus,
            pool=pool,
            store=store,
            resources=resources,
            redis=redis,
            rate_limiter=RateLimiter(redis),
            webhooks=webhooks,
            accounts=accounts,
            stacks=stacks,
        )
        log.info("gateway.started", url=settings.public_url)
        try:
            async with (
                in_background(relay.run()),
                in_background(notifier.run()),
                reconciling(webhook_lifecycle, settings.reconcile_s),
            ):
                yield
        finally:
            await stacks.close()
            await bus.close()
            await redis.aclose()
            await live.aclose()
            await pool.close()
            log.info("gateway.stopped")

    app = Litestar(
        route_handlers=[
            *ROUTES,
            *LIFETIME_ROUTES,
            *FORK_ROUTES,
            *EXPORT_ROUTES,
            *webhook_routes(plans),
            *stack_routes(plans),
            *AUTH_ROUTES,
            *CLAIM_ROUTES,
            *NEON_ROUTES,
            *LLMS_ROUTES,
            *METRICS_ROUTES,
            claim_link,
            console_router(),
        ],
        dependencies=dependencies,
        # The only before_request hook: a router or handler with its own would replace it.
        before_request=content_origin_guard(settings.public_url, settings.content_url),
        lifespan=[lifespan],
        exception_handlers={Exception: error_response},
        openapi_config=openapi_config(version("spinup")),
        request_max_body_size=settings.max_body_bytes,
        template_config=template_config(),
    )
    document_errors(app)
    complete_document(app, settings.content_url)
    return app


class _GatewayServer(uvicorn.Server):
    """Uvicorn, ending webhook and stack log streams as soon as a stop is asked for.

    Uvicorn waits for open responses before the lifespan's shutdown runs, and an event stream
    never ends by itself: without this, one open stream turns every stop into a SIGKILL.
    """

    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        context: GatewayContext | None = getattr(self._app.state, "context", None)
        if context is not None:
            # A signal handler: hand the work to the loop rather than touch it from here.
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
                loop.call_soon_threadsafe(context.webhooks.end_streams)
                loop.call_soon_threadsafe(context.stacks.end_streams)
                loop.call_soon_threadsafe(end_event_streams)
        super().handle_exit(sig, frame)


def _fork_gateway(settings: Settings, own: socket.socket, listening: list[socket.socket]) -> int:
    """Start a gateway process serving on ``own`` of the ``listening`` sockets; its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        # Only its own socket stays open here, so that it closes when this process ends: a
        # copy kept by a sibling would go on receiving connections that nobody accepts.
        for other in listening:
            if other is not own:
                other.close()
        _serve(settings, [own])
    except BaseException:
        log.exception("gateway.process.failed")
        code = 1
    os._exit(code)


def _served_already(address: tuple[str, int]) -> bool:
    """Whether something accepts connections on ``address`` now."""
    try:
        probe = socket.create_connection(address, timeout=1)
    except OSError:
        return False  # nothing accepts there: the port is free, or the bind will say why not
    probe.close()
    return True


def main() -> int:
    """Entry point: settings first, so a missing variable stops start-up with its name."""
    settings = settings_or_exit(SERVICE, lambda: Settings.from_env(os.environ))
    configure_logging(SERVICE, fmt=settings.log_format, level=settings.log_level)
    if settings.http_processes == 1:
        _serve(settings)
        return 0
    return _serve_in_processes(settings)


def _serve(settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    """Build the app and serve it on the settings' address, or on ``sockets`` when given."""
    # Here, in each process: an exporter's thread does not survive the fork.
    configure_tracing(SERVICE, os.environ)
    app = create_app(settings)
    # The request-id wrapper sits outside Litestar so even routing errors (404/405) carry an id.
    config = uvicorn.Config(
        request_id_middleware(app),
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
        # uvicorn's httptools protocol, each response written in one system call.
        http=GatewayHttpToolsProtocol,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        # uvicorn would rewrite the client address from X-Forwarded-For of any local peer;
        # gateway.admission.clients believes it only from SPINUP_TRUSTED_PROXIES.
        proxy_headers=False,
    )
    _GatewayServer(config, app).run(sockets)


def _serve_in_processes(settings: Settings) -> int:
    """``settings.http_processes`` gateways on one port, ending together.

    Each is a whole gateway with its own connections, as a replica behind a load balancer is,
    and accepts on a listening socket of its own: all are bound to the port with
    ``SO_REUSEPORT``, so the kernel hands each new connection to one of them by a hash of its
    addresses, as a load balancer spreads connections over replicas (ADR 0039). This process
    only binds, forks, forwards a stop and waits: when one of them ends by itself, it stops
    the rest and exits with an error, and whatever supervises the gateway restarts it whole.
    """
    address = (settings.http_host, settings.http_port)
    if _served_already(address):
        # SO_REUSEPORT lets every socket of the same user bind the port: a gateway left running
        # (or a second one started by mistake) would silently take a share of the connections
        # instead of the bind failing as it does without it.
        log.error("gateway.port.in_use", host=settings.http_host, port=settings.http_port)
        return 1
    family = socket.AF_INET6 if ":" in settings.http_host else socket.AF_INET
    # Bound before any process starts: a connection hashed to a process still starting waits
    # in its socket's backlog rather than being refused.
    listening = [
        socket.create_server(address, family=family, backlog=2048, reuse_port=True)
        for _ in range(settings.http_processes)
    ]
    children = {_fork_gateway(settings, own, listening) for own in listening}
    for own in listening:
        own.close()
    stopping = False

    def stop(_signal: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("gateway.processes.started", processes=sorted(children))
    exit_code = 0
    while children:
        pid, status = os.wait()
        children.discard(pid)
        if not stopping:
            log.error("gateway.process.ended", pid=pid, exit_code=os.waitstatus_to_exitcode(status))
            exit_code = 1
            stop()
    return exit_code
