"""The `crawljobs` command: run the system, migrate, manage API keys; and talk to a running API."""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack
from typing import Annotated, Any

import typer

from crawljobs.client_cli import register as register_client_commands
from crawljobs.config import Settings
from crawljobs.exceptions import CrawlJobsError
from crawljobs.logs import configure_logging

HELP = """crawljobs: a self-hosted asynchronous crawl-job system.

`crawljobs up` runs the whole system; the client commands (submit, batch, status, html, batches, retry, cancel,
export) talk to a running API at CRAWLJOBS_URL (default http://127.0.0.1:8000) with the key CRAWLJOBS_API_KEY
(for an API on this machine, the key `crawljobs up` saved in CRAWLJOBS_DATA_DIR/api-key is used when it is
unset). Every setting is a CRAWLJOBS_* environment variable: see the README."""


def _quiet_help_types() -> None:
    """Typer 0.29's help prints a type after every parameter (``--json <bool>``, ``URL <str>``): noise for a
    flag, which takes no value, and for an argument, whose name already says what it is. Both are shown
    without one; options that take a value keep their metavar. (Skipped if Typer's help moves: cosmetic.)"""
    from typer import core

    option_type = getattr(core.TyperOption, "display_type_rich", None)
    if option_type is None or not hasattr(core.TyperArgument, "display_type_rich"):
        return

    def option(self: core.TyperOption, ctx: Any) -> str | None:
        return "" if self.is_flag else option_type(self, ctx)

    def argument(self: core.TyperArgument, ctx: Any) -> str | None:
        return ""

    core.TyperOption.display_type_rich = option  # type: ignore[method-assign]
    core.TyperArgument.display_type_rich = argument  # type: ignore[method-assign,assignment]


_quiet_help_types()
app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

HostOption = Annotated[
    str | None, typer.Option(metavar="ADDRESS", help="Address to listen on (default CRAWLJOBS_API_HOST).")
]
PortOption = Annotated[
    int | None, typer.Option(metavar="PORT", help="Port to listen on (default CRAWLJOBS_API_PORT).")
]


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        typer.echo(f"crawljobs: bad configuration: {exc}", err=True)
        raise typer.Exit(2) from exc


def _database_url(settings: Settings, stack: ExitStack) -> str:
    """The configured database, or the embedded one under the data folder (started if need be)."""
    if settings.database_url:
        return settings.database_url
    from crawljobs.embedded import start_postgres

    try:
        server = stack.enter_context(start_postgres(settings.data_dir / "postgres"))
    except CrawlJobsError as exc:
        typer.echo(f"crawljobs: {exc.message}", err=True)
        raise typer.Exit(1) from None
    return server.url


@app.command()
def up(host: HostOption = None, port: PortOption = None) -> None:
    """Run the whole system; with no database or Redis configured, on embedded ones under the data folder."""
    from crawljobs.up import run_up

    settings = _settings()
    configure_logging(settings)  # text, or JSON lines with CRAWLJOBS_LOG_FORMAT=json
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    try:
        run_up(settings, host=host or settings.api_host, port=port if port is not None else settings.api_port)
    except CrawlJobsError as exc:
        typer.echo(f"crawljobs: {exc.message}", err=True)
        raise typer.Exit(1) from None


@app.command()
def api(host: HostOption = None, port: PortOption = None) -> None:
    """Run the HTTP API alone, against the configured PostgreSQL and Redis."""
    settings = _settings()
    if not settings.database_url:
        typer.echo("crawljobs: CRAWLJOBS_DATABASE_URL is not set (or use `crawljobs up`)", err=True)
        raise typer.Exit(2)
    from service.server import serve  # ends the open waits first when it stops

    serve(settings, host=host or settings.api_host, port=port if port is not None else settings.api_port)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    max_jobs: Annotated[
        int | None, typer.Option(metavar="N", help="Process up to N pending jobs from the table, then exit.")
    ] = None,
) -> None:
    """Run one crawl worker (`scrapy crawl crawl_jobs`): a daemon on the queue, or a bounded run."""
    import os

    from scrapy.cmdline import execute

    os.environ.setdefault("SCRAPY_SETTINGS_MODULE", "crawlproject.settings")
    argv = ["scrapy", "crawl", "crawl_jobs", *ctx.args]
    if max_jobs is not None:
        argv += ["-a", f"max_jobs={max_jobs}"]
    execute(argv)


@app.command()
def sweeper() -> None:
    """Run the sweeper: take back dead workers' jobs, reclaim expired leases, dispatch undispatched jobs, replace
    lost messages, drop expired HTML, send due webhooks."""
    import asyncio
    import signal

    from crawljobs.sweeper import run_sweeper

    settings = _settings()
    if not settings.database_url:
        typer.echo("crawljobs: CRAWLJOBS_DATABASE_URL is not set (or use `crawljobs up`)", err=True)
        raise typer.Exit(2)
    configure_logging(settings)  # text, or JSON lines with CRAWLJOBS_LOG_FORMAT=json

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_sweeper(settings, stop)

    asyncio.run(main())


@app.command()
def migrate() -> None:
    """Apply the database migrations (idempotent; concurrent runs wait for each other)."""
    from crawljobs.migrate import migrate as apply

    settings = _settings()
    with ExitStack() as stack:
        applied = apply(_database_url(settings, stack))
    typer.echo(
        f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""), err=True
    )


@app.command()
def health(
    role: Annotated[str, typer.Argument(metavar="ROLE", help="api, worker or sweeper.")],
    url: Annotated[
        str | None, typer.Option(metavar="URL", help="api: the API's base URL (default this host's port).")
    ] = None,
    max_age: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="worker: seen within (default the lease); sweeper: heartbeat younger than (default 60).",
        ),
    ] = None,
) -> None:
    """Check the role this container runs (a health check: exit 0 healthy, 1 not; crawljobs.health)."""
    from crawljobs import health as checks

    settings = _settings()
    try:
        if role == "api":
            message = checks.check_api(settings, url=url)
        elif role == "worker":
            message = checks.check_worker(settings, max_age=max_age)
        elif role == "sweeper":
            message = checks.check_sweeper(settings, max_age=max_age if max_age is not None else 60.0)
        else:
            typer.echo(f"crawljobs: unknown role {role!r} (api, worker or sweeper)", err=True)
            raise typer.Exit(2)
    except checks.Unhealthy as exc:
        typer.echo(f"crawljobs: unhealthy: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(message)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A name for the key (1-128 characters).")],
    tenant: Annotated[
        str | None, typer.Option(metavar="TENANT", help="The tenant the key acts for (default: NAME).")
    ] = None,
) -> None:
    """Create an API key and print it (alone, on stdout). Only its hash is stored: keep it."""
    from crawljobs.keys import create_key
    from crawljobs.migrate import migrate as apply

    for label, value in (("name", name), ("tenant", tenant)):
        if value is not None and not 1 <= len(value) <= 128:
            typer.echo(f"crawljobs: the {label} must be 1 to 128 characters", err=True)
            raise typer.Exit(2)
    settings = _settings()
    with ExitStack() as stack:
        conninfo = _database_url(settings, stack)
        apply(conninfo)
        key = create_key(conninfo, name=name, tenant=tenant)
    sys.stdout.write(key + "\n")


register_client_commands(app)  # submit, batch, status, batches, retry, cancel, export (crawljobs.client_cli)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
