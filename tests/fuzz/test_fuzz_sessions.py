"""A short fuzzing campaign against the real system (``make fuzz`` runs long ones)."""

from __future__ import annotations

import os

from fuzz_campaign import Campaign


def test_fuzzed_sessions_get_well_formed_answers_and_clean_mail_still_gets_through(tmp_path):
    seconds = float(os.environ.get("ELEMTA_FUZZ_SECONDS", "30"))
    seed = int(os.environ.get("ELEMTA_FUZZ_SEED", "1"))
    campaign = Campaign(tmp_path).start()
    try:
        report = campaign.run(duration=seconds, seed=seed, concurrency=8, probe_every=500)
    finally:
        campaign.stop()
    print(report.summary())
    assert report.sessions >= 100, report.summary()
    assert report.probes >= 1 and report.accepted > 0, report.summary()
    assert not report.findings, report.summary()
