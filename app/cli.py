"""The ``omi-backend`` console script: ``serve``, ``users create|revoke``, ``keys create|revoke``,
``plugins list``, and the operations commands ``doctor``, ``reindex``, ``migrate`` and
``transcribe`` (each in its own module under :mod:`app.ops`).

Secrets go to stdout alone (so ``TOKEN=$(omi-backend users create alice)`` works);
everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from app.config import Settings, SettingsError
from app.ops import doctor, migrate, reindex, transcribe

__all__ = ["main"]


def _secret_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    noun: str,
    flag: str,
    summary: str,
) -> None:
    """``NAME create UID`` and ``NAME revoke UID (FLAG VALUE | --all)`` for one kind of secret."""
    group = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help=f"print a new {noun} for a user",
        description=f"Print a new {noun} for UID (only the secret, on stdout; stored hashed).",
    )
    create.add_argument("uid", help="the user id (letters, digits and _ . @ : -)")
    revoke = actions.add_parser(
        "revoke",
        help=f"revoke a user's {noun} (or all of them)",
        description=f"Revoke one {noun} of UID, or every one of UID with --all.",
    )
    revoke.add_argument("uid")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument(flag, help=f"the {noun} to revoke")
    which.add_argument("--all", action="store_true", help=f"revoke every {noun} of the user")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omi-backend", description="Open, self-hostable, Omi-compatible memory server."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the HTTP and WebSocket server", description="Run the server."
    )
    serve.add_argument("--host", help="interface to listen on (default: OMI_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: OMI_PORT or 8000)")

    _secret_commands(commands, "users", "bearer token", "--token", "manage user bearer tokens")
    _secret_commands(
        commands, "keys", "integration key", "--key", "manage integration keys (workflow, screenpipe)"
    )

    plugins = commands.add_parser("plugins", help="inspect plugins", description="Inspect the plugins.")
    plugin_commands = plugins.add_subparsers(dest="action", required=True, metavar="ACTION")
    plugins_list = plugin_commands.add_parser(
        "list",
        help="show each plugin, its version, hooks and status",
        description=(
            "Load the plugins as the server does and show each one: its version (of the package "
            "that declares its entry point), its hooks, and its status: loaded, failed (and why) "
            "or blocked (OMI_PLUGINS_BLOCKED)."
        ),
    )
    plugins_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for operation in (doctor, reindex, migrate, transcribe):
        operation.register(commands)
    return parser


async def _secrets(settings: Settings, args: argparse.Namespace) -> int:
    """``users`` (bearer tokens) and ``keys`` (integration keys): create prints the secret alone."""
    from app.adapters import build_key_value
    from app.core.tokens import TokenService
    from integrations.common import integration_keys

    kv = build_key_value(settings)
    try:
        users = args.command == "users"
        secrets = TokenService(kv) if users else integration_keys(kv)
        if args.action == "create":
            print(await secrets.create(args.uid))
            return 0
        given = args.token if users else args.key
        revoked = await secrets.revoke(args.uid, None if args.all else given)
        noun = "token(s)" if users else "integration key(s)"
        print(f"revoked {revoked} {noun} of {args.uid}", file=sys.stderr)
        return 0 if revoked else 1
    finally:
        await kv.close()


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from app.main import create_app
    from app.serving import configure_logging, serve_app

    configure_logging(settings.log_level)
    serve_app(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level,
        header_timeout=settings.http_header_timeout,
        stall_timeout=settings.http_stall_timeout,
    )
    return 0


def _plugins(settings: Settings, args: argparse.Namespace) -> int:
    import msgspec

    from app.plugins.inventory import format_rows, inventory

    rows = inventory(blocked=settings.blocked_plugins)
    print(msgspec.json.encode(rows).decode() if args.json else format_rows(rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"omi-backend: {exc}", file=sys.stderr)
        return 2
    try:
        if getattr(args, "run", None) is not None:  # an operations command (app.ops)
            status: int = asyncio.run(args.run(settings, args))
            return status
        if args.command == "serve":
            return _serve(settings, args)
        if args.command == "plugins":
            return _plugins(settings, args)
        return asyncio.run(_secrets(settings, args))
    except ValueError as exc:
        print(f"omi-backend: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
