"""Chaos, short form: kill -9 at random and cut connections at random while a
retrying sender (smtplib) sends 200 distinct messages; every acknowledged
message is delivered, and once per recipient (I1, I3, I4).

The long form, with relay to smtp-sink as a second mode, is `bench/chaos`;
`harness/chaos.py` has the sender, the killer, the proxy and the counting.
"""

import pytest

from harness import chaos


@pytest.mark.timeout(150)
def test_nothing_lost_nothing_doubled_under_kills_and_cuts(start_server):
    server = start_server(domains=[chaos.LOCAL_DOMAIN], config=chaos.server_config("local"))
    cfg = chaos.ChaosConfig(mode="local", n=200, threads=8, rate=25.0, kill_every=(0.4, 1.2),
                            deadline=60.0, settle_timeout=30.0)
    r = chaos.run_chaos(server, cfg)
    print(r.summary())
    why = r.summary() + "\n" + "\n".join(r.details[:20])
    assert r.kills >= 2 and r.cuts_dot + r.cuts_bytes >= 2, "too little chaos: " + why
    assert r.settled, "the queue did not drain after the last restart: " + why
    assert r.unacked == 0 and r.permanent == 0, "not every message was acknowledged: " + why
    assert r.lost == 0, why
    assert r.corrupt == 0, why
    assert r.duplicated == 0, why
