"""The client commands of `crawljobs`: submit, batch, status, html, batches, retry, cancel, export.

They talk to a running API through `crawljobs.client`, configured by ``CRAWLJOBS_URL`` (default
``http://127.0.0.1:8000``) and ``CRAWLJOBS_API_KEY``; without a key, against an API on this machine, they use
the key ``crawljobs up`` saved in its data folder (``CRAWLJOBS_DATA_DIR``, default ``.crawljobs``). Results go to
stdout (``--json`` for programs, timestamps as the API writes them), messages and progress to stderr. Exit
codes: 0 done; 1 a job or batch ended in error (or cancelled) or a wait timed out; 2 usage or configuration (a
missing key); 3 the API refused (404, 401, 422...) or could not be reached.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crawljobs.client import (
    API_KEY_VARIABLE,
    URL_VARIABLE,
    Batch,
    Client,
    CrawlJobsAPIError,
    ExportFormat,
    Job,
    NotFound,
    SubmitOptions,
    WaitTimeout,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_API = 0, 1, 2, 3
# The longest read of a batch's event stream (the server sends a keep-alive every 15 s).
FOLLOW_READ_SECONDS = 20.0

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

# Flags show no value placeholder in --help (metavar=""): they take none.
JsonOption = Annotated[bool, typer.Option("--json", metavar="", help="Print the result as JSON.")]
RenderOption = Annotated[bool, typer.Option("--render", metavar="", help="Start with the headless browser.")]
PremiumOption = Annotated[
    bool, typer.Option("--premium", metavar="", help="Start at the premium proxy tier.")
]
UltraOption = Annotated[
    bool, typer.Option("--ultra-premium", metavar="", help="Use the ultra-premium proxy tier only.")
]
RetriesOption = Annotated[
    int | None,
    typer.Option("--max-retries", metavar="N", min=0, max=20, help="Retries after the first attempt."),
]
RobotsOption = Annotated[bool, typer.Option("--obey-robots", metavar="", help="Obey the site's robots.txt.")]
CallbackOption = Annotated[
    str | None,
    typer.Option(
        "--callback-url",
        metavar="URL",
        help="Receives signed webhooks when jobs end (see Webhooks in README).",
    ),
]
WaitForOption = Annotated[
    str | None,
    typer.Option(
        "--wait-for",
        metavar="SELECTOR",
        help="When the page is rendered, wait until this CSS selector matches (the attempt fails if it never does).",
    ),
]
WaitMsOption = Annotated[
    int | None,
    typer.Option(
        "--wait-ms", metavar="MS", min=0, help="When the page is rendered, wait this many milliseconds more."
    ),
]
WaitOption = Annotated[bool, typer.Option("--wait", metavar="", help="Wait until the result is final.")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", metavar="SECONDS", min=0, help="Seconds to wait at most with --wait.")
]
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _fail(message: str, code: int) -> typer.Exit:
    stderr.print(f"crawljobs: {message}", markup=False)
    return typer.Exit(code)


def local_key() -> str | None:
    """The key `crawljobs up` saved in its data folder, when the API named by ``CRAWLJOBS_URL`` runs on this
    machine (a remote API's key is never guessed)."""
    url = httpx.URL(os.environ.get(URL_VARIABLE) or "http://127.0.0.1:8000")
    if url.host not in LOCAL_HOSTS:
        return None
    folder = Path(os.environ.get("CRAWLJOBS_DATA_DIR") or ".crawljobs").expanduser()
    try:
        return (folder / "api-key").read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


@contextmanager
def _client() -> Iterator[Client]:
    """A client from the environment; API errors become exit code 3 with the API's message on stderr."""
    key = os.environ.get(API_KEY_VARIABLE) or local_key()
    if not key:
        raise _fail(
            f"{API_KEY_VARIABLE} is not set: export the API key (`crawljobs keys create NAME` makes one; "
            "`crawljobs up` saves its first one in .crawljobs/api-key, used by default for a local API)",
            EXIT_USAGE,
        )
    try:
        with Client(api_key=key) as client:
            yield client
    except CrawlJobsAPIError as exc:
        where = f"HTTP {exc.status}, {exc.code}" if exc.status else exc.code
        raise _fail(f"{exc.message} ({where})", EXIT_API) from None


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=_json_default, indent=2) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return api_time(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def api_time(value: datetime) -> str:
    """A timestamp as the API writes it (UTC, ISO 8601 with milliseconds and a Z, as JavaScript's
    ``Date.toISOString()``), so that --json output compares with the API's answers string for string."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _job_json(job: Job) -> dict[str, Any]:
    return asdict(job)


def _batch_json(batch: Batch) -> dict[str, Any]:
    return asdict(batch)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _show_job(job: Job) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows: list[tuple[str, Any]] = [
        ("id", job.id),
        ("url", job.url),
        ("status", job.status),
        ("batch", job.batch_id),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("created", _when(job.created_at)),
        ("completed", _when(job.completed_at) if job.completed_at else None),
        ("method", job.success_method),
        ("http status", job.http_status),
        ("html length", job.html_length),
        ("time", f"{job.processing_time_ms} ms" if job.processing_time_ms is not None else None),
        ("error", job.error_message),
    ]
    for name, value in rows:
        if value is not None:
            table.add_row(name, str(value))
    stdout.print(table)


def _show_batch(batch: Batch) -> None:
    c = batch.counts
    stdout.print(f"batch {batch.batch_id}: {batch.progress}% done", markup=False)
    stdout.print(
        f"  {c.total} jobs: {c.completed} completed, {c.error} error, {c.cancelled} cancelled, "
        f"{c.pending} pending, {c.processing} processing",
        markup=False,
    )


def _job_exit(job: Job) -> int:
    return EXIT_OK if job.status in ("completed", "pending", "processing") else EXIT_FAILED


def _batch_exit(batch: Batch) -> int:
    failed = batch.counts.error + batch.counts.cancelled
    return EXIT_FAILED if batch.is_done and failed else EXIT_OK


def _is_job_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _job_or_batch(
    identifier: str, on_job: Callable[[str], Any], on_batch: Callable[[str], Any]
) -> tuple[Literal["job", "batch"], Any]:
    """Try ``identifier`` as a job id (when it looks like one), then as a batch id."""
    if _is_job_id(identifier):
        try:
            return "job", on_job(identifier)
        except NotFound:
            pass
    return "batch", on_batch(identifier)


def _options(
    render: bool,
    premium: bool,
    ultra_premium: bool,
    max_retries: int | None,
    obey_robots: bool,
    callback_url: str | None,
    wait_for: str | None = None,
    wait_ms: int | None = None,
) -> SubmitOptions:
    """The submission options of `submit` and `batch`, from their shared command-line options."""
    return SubmitOptions(
        render=render,
        premium=premium,
        ultra_premium=ultra_premium,
        max_retries=max_retries,
        obey_robots=obey_robots,
        callback_url=callback_url,
        wait_for=wait_for,
        wait_ms=wait_ms,
    )


def submit(
    url: Annotated[str, typer.Argument(metavar="URL", help="The URL to crawl (http or https).")],
    render: RenderOption = False,
    premium: PremiumOption = False,
    ultra_premium: UltraOption = False,
    max_retries: RetriesOption = None,
    obey_robots: RobotsOption = False,
    callback_url: CallbackOption = None,
    wait_for: WaitForOption = None,
    wait_ms: WaitMsOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 300.0,
    as_json: JsonOption = False,
) -> None:
    """Submit one URL and print the job id (with --wait: the finished job)."""
    with _client() as client:
        options = _options(
            render, premium, ultra_premium, max_retries, obey_robots, callback_url, wait_for, wait_ms
        )
        job = client.submit(url, **options)
        code = EXIT_OK
        if wait:
            try:
                job = client.wait(job.id, timeout=timeout)
            except WaitTimeout as exc:
                assert exc.job is not None
                job, code = exc.job, EXIT_FAILED
                stderr.print(f"crawljobs: {exc}", markup=False)
            else:
                code = _job_exit(job)
    if as_json:
        _print_json(_job_json(job))
    elif wait:
        _show_job(job)
    else:
        sys.stdout.write(job.id + "\n")
    raise typer.Exit(code)


def _read_urls(source: str) -> list[str]:
    if source == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise _fail(f"cannot read {source}: {exc.strerror or exc}", EXIT_USAGE) from None
    urls = [line.strip() for line in text.splitlines()]
    return [u for u in urls if u and not u.startswith("#")]


def _follow_batch(client: Client, batch_id: str, total: int, timeout: float) -> Batch:
    """Follow the batch's pushed progress (its event stream) with a live progress bar on stderr until every
    job is final; `WaitTimeout` (with the batch as it stands) at the end of ``timeout``."""
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=stderr, transient=False) as progress:
        task = progress.add_task(batch_id, total=total, detail="")
        try:
            # Events come at least every 15 s (keep-alives), so the deadline is checked at least that often.
            for event in client.follow(batch_id, timeout=max(0.1, min(timeout, FOLLOW_READ_SECONDS))):
                c = event.counts
                detail = f"{c.error} error · {c.cancelled} cancelled · {c.processing} in flight"
                progress.update(task, completed=c.final, total=c.total, detail=detail)
                if event.done or time.monotonic() >= deadline:
                    break
        except WaitTimeout:
            pass
        batch = client.get_batch(batch_id, limit=1)
        c = batch.counts
        progress.update(task, completed=c.final, total=c.total)
    if not batch.is_done:
        raise WaitTimeout(f"batch {batch_id} is {batch.progress}% done after {timeout:g} s", batch=batch)
    return batch


def batch(
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="A file of URLs, one a line; - for stdin.")],
    render: RenderOption = False,
    premium: PremiumOption = False,
    ultra_premium: UltraOption = False,
    max_retries: RetriesOption = None,
    obey_robots: RobotsOption = False,
    callback_url: CallbackOption = None,
    wait_for: WaitForOption = None,
    wait_ms: WaitMsOption = None,
    batch_id: Annotated[
        str | None, typer.Option("--batch-id", metavar="ID", help="Your own id for the batch.")
    ] = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 3600.0,
    as_json: JsonOption = False,
) -> None:
    """Submit a file of URLs (blank lines and # comments skipped) as one batch; print the batch id."""
    urls = _read_urls(source)
    if not urls:
        raise _fail(f"no URLs in {'stdin' if source == '-' else source}", EXIT_USAGE)
    code = EXIT_OK
    final: Batch | None = None
    with _client() as client:
        options = _options(
            render, premium, ultra_premium, max_retries, obey_robots, callback_url, wait_for, wait_ms
        )
        submission = client.submit_batch(urls, **options, batch_id=batch_id)
        stderr.print(
            f"batch {submission.batch_id}: {submission.accepted} accepted, {submission.rejected} refused",
            markup=False,
        )
        for failure in submission.failures:
            stderr.print(f"  refused #{failure.index} {failure.url}: {failure.reason}", markup=False)
        if wait:
            try:
                final = _follow_batch(client, submission.batch_id, submission.accepted, timeout)
            except WaitTimeout as exc:
                final, code = exc.batch, EXIT_FAILED
                stderr.print(f"crawljobs: {exc}", markup=False)
            else:
                code = _batch_exit(final)
    if as_json:
        result: dict[str, Any] = asdict(submission)
        if final is not None:
            result["batch"] = _batch_json(final)
        _print_json(result)
    else:
        sys.stdout.write(submission.batch_id + "\n")
    raise typer.Exit(code)


def status(
    identifier: Annotated[str, typer.Argument(metavar="ID", help="A job id or a batch id.")],
    as_json: JsonOption = False,
) -> None:
    """Show a job or a batch (exit 1 if it ended in error or cancelled, or the batch has such jobs)."""
    with _client() as client:
        kind, found = _job_or_batch(identifier, client.get, lambda b: client.get_batch(b, limit=1))
    if kind == "job":
        if as_json:
            _print_json({"type": "job", **_job_json(found)})
        else:
            _show_job(found)
        raise typer.Exit(_job_exit(found))
    if as_json:
        body = _batch_json(found)
        body.pop("jobs", None)
        _print_json({"type": "batch", **body})
    else:
        _show_batch(found)
    raise typer.Exit(_batch_exit(found))


def html(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A job id.")],
    output: Annotated[
        str, typer.Option("--output", "-o", metavar="FILE", help="The file to write; - (default) for stdout.")
    ] = "-",
) -> None:
    """Print the HTML a completed job fetched (or write it to a file)."""
    with _client() as client:
        page = client.html(job_id)
    if output == "-":
        sys.stdout.write(page)
        return
    try:
        Path(output).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {output}: {exc.strerror or exc}", EXIT_USAGE) from None
    stderr.print(f"wrote {len(page.encode())} bytes to {output}", markup=False)


def batches(
    limit: Annotated[int, typer.Option(metavar="N", min=1, max=1000, help="How many batches.")] = 25,
    offset: Annotated[int, typer.Option(metavar="N", min=0, help="How many to skip.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """List your batches, newest first (tab-separated when stdout is not a terminal)."""
    with _client() as client:
        page = client.batches(limit=limit, offset=offset)
    if as_json:
        _print_json(
            {
                "batches": [{k: v for k, v in _batch_json(b).items() if k != "jobs"} for b in page.batches],
                "total": page.total,
                "limit": page.limit,
                "offset": page.offset,
            }
        )
        return
    names = ("batch", "created", "total", "completed", "error", "cancelled", "pending", "progress")
    rows = [
        (
            item.batch_id,
            _when(item.created_at),
            str(item.counts.total),
            str(item.counts.completed),
            str(item.counts.error),
            str(item.counts.cancelled),
            str(item.counts.pending + item.counts.processing),
            f"{item.progress}%",
        )
        for item in page.batches
    ]
    if not sys.stdout.isatty():  # a pipe or a file: whole ids, one line a batch, for cut and awk
        sys.stdout.write("".join("\t".join(row) + "\n" for row in (names, *rows)))
        return
    table = Table(title=f"{page.total} batch(es)")
    for name in names:
        table.add_column(name, justify="left" if name in ("batch", "created") else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    stdout.print(table)


def retry(batch_id: Annotated[str, typer.Argument(metavar="BATCH", help="The batch id.")]) -> None:
    """Put a batch's failed jobs back to pending; print how many."""
    with _client() as client:
        count = client.retry_failed(batch_id)
    stdout.print(f"retried {count} job(s) of batch {batch_id}", markup=False)


def cancel(identifier: Annotated[str, typer.Argument(metavar="ID", help="A job id or a batch id.")]) -> None:
    """Cancel a job, or every pending and processing job of a batch."""
    with _client() as client:
        kind, found = _job_or_batch(identifier, client.cancel, client.cancel_batch)
    if kind == "job":
        stdout.print(f"job {found.id}: {found.status}", markup=False)
    else:
        stdout.print(f"cancelled {found} job(s) of batch {identifier}", markup=False)


def export(
    batch_id: Annotated[str, typer.Argument(metavar="BATCH", help="The batch id.")],
    output: Annotated[
        str, typer.Option("--output", "-o", metavar="FILE", help="The file to write; - for stdout.")
    ],
    export_format: Annotated[
        str,
        typer.Option(
            "--format", metavar="FORMAT", help="ndjson (with HTML), csv (metadata) or json (a JSON array)."
        ),
    ] = "ndjson",
) -> None:
    """Download every job of a batch to a file."""
    if export_format not in ("ndjson", "csv", "json"):
        raise _fail(f"--format must be ndjson, csv or json, not {export_format!r}", EXIT_USAGE)
    chosen = cast(ExportFormat, export_format)
    with _client() as client:
        if output == "-":
            client.export(batch_id, sys.stdout.buffer, format=chosen)
            return
        try:
            written = client.export(batch_id, output, format=chosen)
        except OSError as exc:
            raise _fail(f"cannot write {output}: {exc.strerror or exc}", EXIT_USAGE) from None
    stderr.print(f"wrote {written} bytes to {output}", markup=False)


def register(app: typer.Typer) -> None:
    """Add the client commands to the `crawljobs` app."""
    for command in (submit, batch, status, html, batches, retry, cancel, export):
        app.command()(command)
