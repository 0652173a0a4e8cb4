"""benchmark.polling's reading of wrk's report and its table (the load itself needs wrk, which the tests do not)."""

from __future__ import annotations

import pytest

from benchmark.polling import BASELINE, Load, _figure, _milliseconds, table

WRK_REPORT = """Running 10s test @ http://127.0.0.1:8000/openapi.json
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    21.04ms    3.10ms  48.53ms   80.11%
    Req/Sec     2.38k   120.37     2.61k    73.00%
  Latency Distribution
     50%  870.00us
     75%   22.10ms
     90%   24.62ms
     99%    1.02s
  23712 requests in 10.01s, 1.26GB read
Requests/sec:   2369.12
Transfer/sec:    128.61MB
"""


def test_reads_the_rate_and_the_percentiles_in_milliseconds() -> None:
    assert float(_figure(WRK_REPORT, r"Requests/sec:\s+([\d.]+)")) == 2369.12
    assert _milliseconds(_figure(WRK_REPORT, r"^\s+50%\s+(\S+)")) == pytest.approx(0.87)
    assert _milliseconds(_figure(WRK_REPORT, r"^\s+75%\s+(\S+)")) == pytest.approx(22.1)
    assert _milliseconds(_figure(WRK_REPORT, r"^\s+99%\s+(\S+)")) == pytest.approx(1020.0)
    with pytest.raises(SystemExit):
        _milliseconds("12 minutes")


def test_the_table_gives_each_rate_against_the_static_document() -> None:
    rows = table({BASELINE: Load(1000.0, 10.0, 40.0), "/health": Load(2500.0, 4.0, 9.5)}).splitlines()
    assert rows[2] == "| `/openapi.json` | 1,000 | 10.0 | 40.0 | 1.00 |"
    assert rows[3] == "| `/health` | 2,500 | 4.0 | 9.5 | 2.50 |"
