"""Data-set fuzzing of the running importer with Orthanc behind it (issue #14).

Every case is one C-STORE of a mutated data set (tests/fuzz/mutations.py) whose patient data
must never reach a log. Afterwards: whatever was acknowledged is in Orthanc and nothing is in
the dead letters (garbage is refused up front, never acknowledged and rejected later), Orthanc
and the adapter are alive (C-ECHO), the adapter's threads, fds and RSS are back near their
baseline, every log line is one JSON object without a traceback or a leaked value, and what the
store gained was acknowledged, reads with pydicom and has valid UIDs (tests/fuzz/checks.py).

``DICOM_ADAPTER_FUZZ_COUNT`` (default 120, under a minute) and ``DICOM_ADAPTER_FUZZ_SEED``
(default 14) make long runs: ``DICOM_ADAPTER_FUZZ_COUNT=5000 pytest tests/fuzz``.
"""

from __future__ import annotations

import collections
import os
import random
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.checks import (
    check_after,
    check_new_instances,
    check_resources,
    orthanc_instance_ids,
    resources,
    spool_empty,
)
from tests.fuzz.mutations import CT, MUTATIONS, Case, make_case
from tests.peers.adapter_proc import AdapterProcess
from tests.peers.orthanc import OrthancPeer
from tests.peers.raw_scu import raw_c_store
from tests.peers.wait import wait_until

pytestmark = pytest.mark.integration

AET = "IMPORTADAPTER"
COUNT = int(os.environ.get("DICOM_ADAPTER_FUZZ_COUNT", "120"))
SEED = int(os.environ.get("DICOM_ADAPTER_FUZZ_SEED", "14"))
SUCCESS = {0x0000, 0xB000, 0xB006, 0xB007}


@pytest.fixture
def adapter(orthanc: OrthancPeer, tmp_path: Path) -> Iterator[AdapterProcess]:
    config = {
        "dicomweb": {"url": orthanc.dicomweb_url, "auth": {"kind": "none"}},
        "retry": {"initial_delay": 0.1, "max_delay": 0.5},
        "importer": {"dimse": {"ae_title": AET}},
    }
    with AdapterProcess(config, tmp_path) as proc:
        yield proc


def send(adapter: AdapterProcess, case: Case) -> int | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = raw_c_store(
            adapter.port,
            CT,
            case.sop_instance_uid,
            case.data,
            transfer_syntax=case.transfer_syntax,
            called_aet=AET,
            timeout=20,
        )
    return result.status


def test_data_sets_built_to_leak_are_refused_and_leak_nothing(
    adapter: AdapterProcess, orthanc: OrthancPeer
) -> None:
    rng = random.Random(SEED)
    refused: collections.Counter[str] = collections.Counter()
    for name in ("hostile-uid", "every-vr", "repeat", "undelimited", "length", "truncate"):
        for _ in range(12):
            case = make_case(rng, name)
            status = send(adapter, case)
            if status not in SUCCESS:
                refused[name] += 1
    assert refused["hostile-uid"] == refused["repeat"] == refused["undelimited"] == 12
    check_after(adapter, orthanc, set(), called_aet=AET)


def test_fuzzed_data_sets_are_refused_up_front_or_stored(
    adapter: AdapterProcess, orthanc: OrthancPeer
) -> None:
    rng = random.Random(SEED)
    for _ in range(3):  # warm up: the baseline includes pools and caches
        case = make_case(rng, "none")
        assert send(adapter, case) == 0x0000
    assert adapter.pid is not None
    wait_until(lambda: spool_empty(adapter), 30, what="warm-up delivered")
    baseline = resources(adapter.pid)
    before = orthanc_instance_ids(orthanc)
    acked: set[str] = set()
    outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
    started = time.monotonic()
    for _ in range(COUNT):
        case = make_case(rng)
        status = send(adapter, case)
        ok = status in SUCCESS
        outcomes[(case.mutation, "acked" if ok else f"{status}")] += 1
        if case.mutation == "none":
            assert ok, case
        if ok:
            acked.add(case.sop_instance_uid)
    elapsed = time.monotonic() - started
    print(f"fuzz: {COUNT} cases in {elapsed:.1f}s, seed {SEED}: {sorted(outcomes.items())}")
    check_after(adapter, orthanc, acked, called_aet=AET)
    stored = check_new_instances(orthanc, before, acked)
    print(f"fuzz: {len(acked)} acknowledged, {stored} new instances in the store, well formed")
    check_resources(adapter, baseline)
    assert set(MUTATIONS) - {m for m, _ in outcomes} <= {"none"} or COUNT < 50
