"""A bounded load: 200 submissions from 8 threads against a small queue."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor

import httpx

from tunesmith.server.store import Job

from .conftest import wait_for


def test_200_submissions_from_8_threads(start_server):
    server = start_server(max_queue=8)
    app = server.app

    def client_thread(n: int):
        answers = []
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(25):
                res = client.post("/api/generate", json={"prompt": f"fast rock drums {n} {i}", "seconds": 0.1})
                answers.append((res.status_code, res.json(), res.headers.get("retry-after")))
                if res.status_code == 200:  # and the device's polling, which is never refused
                    assert client.get(f"/api/status/{res.json()['id']}").status_code == 200
        return answers

    with ThreadPoolExecutor(8) as pool:
        answers = [a for batch in pool.map(client_thread, range(8)) for a in batch]
    assert len(answers) == 200
    assert {status for status, _, _ in answers} <= {200, 429}
    accepted = [body["id"] for status, body, _ in answers if status == 200]
    refused = [(body, retry) for status, body, retry in answers if status == 429]
    assert accepted and all(retry and int(retry) > 0 and "queue is full" in body["detail"] for body, retry in refused)
    store, worker = app.state.store, app.state.worker
    with httpx.Client(base_url=server.url) as client:
        wait_for(lambda: store.count() == 0, "the queue to drain")
        statuses = [client.get(f"/api/status/{i}").json()["status"] for i in accepted]
    assert statuses == ["done"] * len(accepted)  # nothing lost
    assert store.count(("done",)) == len(accepted) == len(set(accepted))
    assert worker._batches < len(accepted)  # queued jobs were batched
    # Finished jobs live in the store only: nothing in memory grows with them.
    assert worker.progress == {} and worker.cancelling == set()
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is Job]
