"""A webhook owed to a receiver outlives the processes around it.

A real worker fetches the page, a real API process takes the submission, a real sweeper process makes the first
delivery (the receiver answers 500). Then the API process is stopped and the sweeper killed (SIGKILL) while the
delivery waits out its first backoff (10 s); a new API process and a new sweeper take over, and the receiver
gets the same delivery again — once accepted, signed with the tenant's secret — and the delivery log read
through the new API says so.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest

from bench.common import api_process
from crawljobs.keys import create_key
from crawljobs.webhooks import verify
from tests.acceptance.conftest import drop_prefix, system_settings_for
from tests.acceptance.proxies import TestProxy
from tests.acceptance.site import TestSite
from tests.acceptance.system import running_system
from tests.integration.test_waiting import until
from tests.integration.test_webhooks import Receiver

pytestmark = pytest.mark.acceptance


def test_delivery_survives_an_api_and_sweeper_restart(
    database_url: str,
    redis_url: str,
    premium_proxy: TestProxy,
    ultra_proxy: TestProxy,
    clean_site: TestSite,
    tmp_path: Path,
) -> None:
    receiver = Receiver("127.0.0.1", failures=1).start()
    settings = system_settings_for(database_url, redis_url, premium_proxy, ultra_proxy)
    api_env = {"allowed_networks": "127.0.0.1/32", "queue_prefix": settings.queue_prefix}
    key = create_key(database_url, name="hooks-restart")
    auth = {"Authorization": f"Bearer {key}"}
    try:
        with running_system(settings, tmp_path / "logs") as system:
            system.start_worker()
            first_sweeper = system.start_sweeper()
            with api_process(database_url, redis_url, key=key, **api_env) as (base, _):
                created = httpx.post(
                    f"{base}/v1/jobs",
                    json={"url": clean_site.url("/fast/hook"), "callback_url": receiver.url},
                    headers=auth,
                )
                assert created.status_code == 201, created.text
                job_id = created.json()["id"]
                waited = httpx.get(
                    f"{base}/v1/jobs/{job_id}/wait", params={"timeout": 60}, headers=auth, timeout=70
                )
                assert waited.json()["status"] == "completed", system.logs_text()
                until(lambda: len(receiver.received) == 1, what="the first delivery attempt", seconds=30)
            # The API process has stopped; the sweeper that made the first attempt dies without warning.
            first_sweeper.signal(signal.SIGKILL)
            first_sweeper.wait(10)
            assert [r.answered for r in receiver.received] == [500]

            with api_process(database_url, redis_url, key=key, **api_env) as (base, _):
                system.start_sweeper()
                until(lambda: len(receiver.received) == 2, what="the delivery after the restart", seconds=60)

                def delivery_log() -> httpx.Response:
                    return httpx.get(
                        f"{base}/v1/webhooks/deliveries", params={"job_id": job_id}, headers=auth
                    )

                # The sweeper records the receiver's answer after it has it: read the log once it has.
                until(
                    lambda: [d["status"] for d in delivery_log().json()["deliveries"]] == ["delivered"],
                    what="the delivery recorded as delivered",
                    seconds=30,
                )
                log = delivery_log()
                secret = httpx.get(f"{base}/v1/webhooks/secret", headers=auth).json()["secret"]
        # Every process has stopped (none can send any more) after the delivery was recorded as delivered:
        # what the receiver got is all it will ever get, one accepted delivery.
        assert [r.answered for r in receiver.received] == [500, 200]
    finally:
        receiver.stop()
        drop_prefix(redis_url, settings.queue_prefix)

    first, accepted = receiver.received
    assert first.headers["X-Crawljobs-Delivery"] == accepted.headers["X-Crawljobs-Delivery"]
    assert verify(
        secret,
        accepted.headers["X-Crawljobs-Timestamp"],
        accepted.body,
        accepted.headers["X-Crawljobs-Signature"],
    )
    payload = json.loads(accepted.body)
    assert (payload["event"], payload["job"]["id"], payload["job"]["status"]) == (
        "job.completed",
        job_id,
        "completed",
    )
    assert log.status_code == 200
    [delivery] = log.json()["deliveries"]
    assert (delivery["status"], delivery["attempts"], delivery["last_status"]) == ("delivered", 2, 200)
