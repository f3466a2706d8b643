"""``spinup-mcp``: the Spinup MCP server over stdio (the default) or streamable HTTP."""

from __future__ import annotations

import argparse
import logging
import sys

from spinup_mcp.api import DEFAULT_URL, SpinupApi
from spinup_mcp.server import build_server

DEFAULT_HTTP_PORT = 8765


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; configuration of the API itself comes from the environment."""
    parser = argparse.ArgumentParser(
        prog="spinup-mcp",
        description="An MCP server whose tools create and manage Spinup resources (databases,"
        " caches, MongoDB, NATS, S3 buckets, webhook receivers). It talks to the API at"
        f" SPINUP_URL (default {DEFAULT_URL}); set SPINUP_TOKEN (a session or spp_ access"
        " token) to create resources in an account and to list and claim them.",
    )
    parser.add_argument(
        "--http",
        action="store_true",
        help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on with --http (127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_HTTP_PORT,
        help=f"port to listen on with --http ({DEFAULT_HTTP_PORT})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spinup-mcp`` console script."""
    args = parse_args(argv)
    server = build_server(SpinupApi.from_env())
    # The SDK logs at INFO, and httpx logs each request's URL at INFO: a resource's URL holds
    # its token, and an MCP host keeps the server's stderr in its log files.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if args.http:
        # Only with HTTP: over stdio, the streams belong to the protocol.
        sys.stderr.write(f"Spinup MCP server at http://{args.host}:{args.port}/mcp\n")
        server.run("streamable-http", host=args.host, port=args.port)
    else:
        server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
