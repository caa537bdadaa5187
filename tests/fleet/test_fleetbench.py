"""The fleet-through-the-broker measurement (cyphy.fleetbench; `make bench` section
fleet_mqtt runs it at 500 and 2000 nodes for 60 s): a short run, end to end, with real
parts (a swarm on UDP, `cyphy gateway` processes, a real broker, a counting subscriber)."""

from __future__ import annotations

from cyphy import fleetbench


def test_count_follows_the_nodes_clock_across_its_wrap_and_sees_a_gap() -> None:
    wrap = fleetbench.T_MASK + 1
    stamps = [(1.0, (wrap - 200 + 100 * k) % wrap) for k in range(10)]   # wraps after 2
    assert fleetbench.count(stamps, 0.0, 2.0, 100) == (10, 10)
    del stamps[4]                                                       # one lost
    assert fleetbench.count(stamps, 0.0, 2.0, 100) == (10, 9)
    assert fleetbench.count(stamps, 5.0, 6.0, 100) == (0, 0)             # none in the window


def test_seq_is_read_without_decoding_the_metrics() -> None:
    from cyphy import sparkplug as sp

    p = sp.Payload(timestamp=1, metrics=[sp.Metric(None, sp.DataType.Double, 1.5, alias=3,
                                                   timestamp=2)], seq=201)
    assert sp.payload_seq(sp.encode(p, include_datatypes=False)) == 201


def test_the_sample_times_are_read_as_cyphy_sparkplug_reads_them() -> None:
    from cyphy import sparkplug as sp

    D = sp.DataType
    ms = [sp.Metric(None, D.UInt32, 7 + k, alias=5, timestamp=1000 + k, is_historical=k < 2)
          for k in range(3)]
    ms.insert(1, sp.Metric(None, D.Double, 2.5, alias=6, timestamp=1))
    ms.insert(2, sp.Metric(None, D.String, "auto", alias=7, timestamp=1))
    data = sp.encode(sp.Payload(timestamp=1, metrics=ms, seq=4), include_datatypes=False)
    want = [m.value for m in sp.decode(data, datatypes={5: D.UInt32, 6: D.Double,
                                                         7: D.String}).metrics if m.alias == 5]
    assert sp.metric_ints(data, 5) == want == [7, 8, 9]


def test_100_nodes_through_2_gateways_lose_no_sample() -> None:
    r = fleetbench.run(100, gateways=2, seconds=3.0, batch=10, log=lambda _m: None, settle_s=2.0)
    assert not r.error, r.error
    assert r.births == 100 and r.silent == 0, r
    assert r.expected >= 100 * 20 and r.lost == 0 and r.seq_gaps == 0, r
    assert len(r.gateway_cpu_pct) == 2 and all(c > 0 for c in r.gateway_cpu_pct), r


def test_the_session_cost_figure_runs_on_one_thread() -> None:
    c = fleetbench.session_cost(50, seconds=2.0, rate_hz=20)
    assert c["lost"] == 0 and c["frames_per_s"] > 50 * 20 * 0.8, c
    assert c["threads"] <= 3, c        # the test's own, the hub's (and maybe its pool's)
