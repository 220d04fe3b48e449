"""Fixtures of the fault-injection suite: its own PostgreSQL and Redis (never the shared ones), the test site,
the batch size, and a summary of what every case counted at the end of pytest's output.

The batch size is 1,000 jobs per case; ``pytest tests/faults --fault-jobs 10000`` runs more (the option exists
when tests/faults is named on the command line; ``FAULT_JOBS=10000`` works however pytest is run). Each case's
time limit grows with it.

A case that fails keeps its part of the logs of every process it ran on (workers, sweeper, API) in a folder of
its own under ``.crawljobs/fault-logs/`` (or ``$FAULT_LOGS``), named in its failure report and at the end of
pytest's output; nothing deletes them.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.acceptance.site import TestSite, start_site
from tests.faults.harness import (
    RECOVERY_BOUND_SECONDS,
    RESULTS,
    CaseLogs,
    CaseResult,
    FaultRun,
    FaultSystem,
)
from tests.faults.servers import FaultPostgres, FaultRedis

DEFAULT_JOBS = 1000
JOBS_VARIABLE = "FAULT_JOBS"  # not CRAWLJOBS_: tests/conftest.py strips those from the environment
LOGS_VARIABLE = "FAULT_LOGS"
KEPT_LOGS: list[Path] = []  # the folders of the failed cases' logs, for the summary


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fault-jobs",
        type=int,
        default=None,
        help=f"jobs per fault-injection case (default {DEFAULT_JOBS}, or ${JOBS_VARIABLE})",
    )


def fault_jobs_of(config: pytest.Config) -> int:
    jobs = config.getoption("--fault-jobs", default=None) or int(
        os.environ.get(JOBS_VARIABLE) or DEFAULT_JOBS
    )
    if jobs < 100:
        raise pytest.UsageError("--fault-jobs must be at least 100")
    return int(jobs)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    jobs = fault_jobs_of(config)
    for item in items:
        if item.get_closest_marker("faults") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(240 + int(jobs * 0.1)))


def kept_logs_root(config: pytest.Config) -> Path:
    configured = os.environ.get(LOGS_VARIABLE)
    return Path(configured) if configured else config.rootpath / ".crawljobs" / "fault-logs"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS and not KEPT_LOGS:
        return
    terminalreporter.section("fault injection")
    for folder in KEPT_LOGS:
        terminalreporter.write_line(f"the logs of a failed case are kept in {folder}")
    if not RESULTS:
        return
    terminalreporter.write_line(
        f"recovery: seconds from the end of the fault until no job is stranded (bound {RECOVERY_BOUND_SECONDS} s"
        " = 2 x lease; for the API restart, the longest a client waited for an answer that was there to be had);"
        " stranded: the most jobs seen neither held by a live worker nor queued"
    )
    terminalreporter.write_line(CaseResult.HEADER)
    for result in RESULTS:
        terminalreporter.write_line(result.row())


@pytest.fixture(scope="session")
def fault_jobs(pytestconfig: pytest.Config) -> int:
    return fault_jobs_of(pytestconfig)


@pytest.fixture(scope="session")
def fault_postgres() -> Iterator[FaultPostgres]:
    server = FaultPostgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def fault_redis() -> Iterator[FaultRedis]:
    server = FaultRedis()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def fault_site() -> Iterator[TestSite]:
    with start_site(record_hits=False) as running:
        yield running


class FaultSystems:
    """The current :class:`FaultSystem`, made again after a case that failed."""

    def __init__(self, pg: FaultPostgres, rd: FaultRedis, site: TestSite, logs: Path) -> None:
        self.pg, self.rd, self.site, self.logs = pg, rd, site, logs
        self.current: FaultSystem | None = None

    def get(self) -> FaultSystem:
        if self.current is not None and not self.current.clean:
            self.current.close()
            self.current = None
        if self.current is None:
            self.current = FaultSystem(self.pg, self.rd, self.site, self.logs / secrets.token_hex(3))
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()


@pytest.fixture(scope="session")
def fault_systems(
    fault_postgres: FaultPostgres,
    fault_redis: FaultRedis,
    fault_site: TestSite,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FaultSystems]:
    systems = FaultSystems(fault_postgres, fault_redis, fault_site, tmp_path_factory.mktemp("faultlogs"))
    try:
        yield systems
    finally:
        systems.close()


_FAILED = pytest.StashKey[bool]()
_CASE_LOGS = pytest.StashKey[CaseLogs]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
        logs = item.stash.get(_CASE_LOGS, None)
        if logs is not None:
            folder = kept_logs_root(item.config) / f"{time.strftime('%Y%m%d-%H%M%S')}-{item.name}"
            kept = logs.keep(folder)
            KEPT_LOGS.append(folder)
            item.user_properties.append(("fault_logs", str(folder)))
            report.sections.append(
                ("fault logs", f"kept in {folder}: " + ", ".join(path.name for path in kept))
            )
    return report


@pytest.fixture
def fault_run(
    request: pytest.FixtureRequest, fault_systems: FaultSystems, fault_jobs: int
) -> Iterator[Callable[[str], FaultRun]]:
    """Makes the run of a case on the current system; a case that fails leaves the system to be made again
    (and its logs kept: ``pytest_runtest_makereport``)."""
    system = fault_systems.get()
    request.node.stash[_CASE_LOGS] = CaseLogs.begin(system)

    def make(case: str) -> FaultRun:
        return FaultRun(system, case, fault_jobs)

    yield make
    if request.node.stash.get(_FAILED, False):
        system.clean = False
