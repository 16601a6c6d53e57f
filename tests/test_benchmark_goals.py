"""The serving goals count against the peer at its strongest: at each concurrency, the fastest of
MLServer's configurations measured on the same core, never a fixed one (synthetic results, no servers)."""

from __future__ import annotations

from tools.benchmarks.serving import A, B, UNBATCHED, ServingOptions, summarize


def point(config: str, c: int, rps: float, cores: int = 1) -> dict:
    return {"config": config, "cores": cores, "payload_rows": 1, "concurrency": c, "rps": rps, "rps_per_core": rps,
            "p50_ms": 1.0, "p99_ms": 10.0}


def goals(results: list[dict]) -> dict:
    options = ServingOptions(payload_rows=(1,), concurrency=(1, 4, 16, 64), two_core_rows=())
    ceiling = {"1": {"predict": {"rps_per_core": 1000.0}, "invocations": {"rps_per_core": 500.0}}}
    memory = {A: {"rss_mib": 100.0}, UNBATCHED: {"rss_mib": 100.0}}
    return summarize(results, ceiling, {"middleware_cpu_us_per_request": 1.0}, options, memory)["goals"]


def test_each_concurrency_is_judged_against_the_fastest_mlserver_configuration_there():
    ours = {1: 300, 4: 600, 16: 1300, 64: 2000}
    in_process = {1: 310, 4: 500, 16: 900, 64: 1000}  # faster at low load
    pool = {1: 200, 4: 550, 16: 1100, 64: 1600}  # faster at high load
    results = [point(A, c, rps) for c, rps in ours.items()] + [point(B, c, 100) for c in ours] + \
        [point(UNBATCHED, c, 100) for c in ours] + \
        [point("mlserver-inproc", c, rps) for c, rps in in_process.items()] + \
        [point("mlserver-pool-batching", c, rps) for c, rps in pool.items()] + \
        [point("mlserver-pool-batching", 16, 5000, cores=2)]  # two cores: never the one-core yardstick
    found = goals(results)
    assert {c: (found[f"a_over_best_mlserver_at_c{c}"]["peer"], found[f"a_over_best_mlserver_at_c{c}"]["value"])
            for c in ours} == {1: ("mlserver-inproc", 0.97), 4: ("mlserver-pool-batching", 1.09),
                               16: ("mlserver-pool-batching", 1.18), 64: ("mlserver-pool-batching", 1.25)}
    assert [found[f"a_over_best_mlserver_at_c{c}"]["met"] for c in ours] == [False, True, False, False]
