"""The pieces the worker stands on: batched requests keep their seeds; a cancel stops generation."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.errors import InvalidParameter
from tunesmith.request import batch_requests, check_request
from tunesmith.server.worker import Cancelled


def test_batch_requests_keeps_each_requests_rows_and_seeds():
    a = check_request("calm piano", duration=1, seed=5, num_variations=2)
    b = check_request("fast drums", duration=1, seed=100)
    both = batch_requests([a, b])
    assert both.rows == a.rows + b.rows
    assert [seed for _, seed in both.rows] == [5, 6, 100]
    with pytest.raises(InvalidParameter, match="differ only"):
        batch_requests([a, check_request("x", duration=2, seed=1)])


def test_batched_generation_equals_each_alone(mono_model):
    a = check_request("deep house", duration=0.4, seed=3, num_variations=2)
    b = check_request("bossa nova guitar", duration=0.4, seed=77)
    together = mono_model.generate_request(batch_requests([a, b]))
    alone = mono_model.generate_request(a) + mono_model.generate_request(b)
    assert [c.seed for c in together] == [3, 4, 77]
    for x, y in zip(together, alone):
        np.testing.assert_allclose(x.audio, y.audio, atol=1e-5)


def test_a_cancel_raised_from_progress_stops_generation(mono_model):
    assert not issubclass(Cancelled, RuntimeError)  # generate_request retries RuntimeErrors on the CPU
    steps = []

    def progress(done, total):
        steps.append(done)
        if done == 5:
            raise Cancelled()

    with pytest.raises(Cancelled):
        mono_model.generate("slow ambient", duration=2, seed=1, progress=progress)
    assert steps[-1] == 5  # no step after the cancel
