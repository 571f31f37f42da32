#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: lint, types, tests (real peers included),
# then the benchmarks in their short mode (they print figures; they never pass/fail on time).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python3 ]; then export PATH="$PWD/.venv/bin:$PATH"; fi
echo "== ruff";  python3 -m ruff check src tests bench
echo "== mypy";  python3 -m mypy src
echo "== pytest"; python3 -m pytest -q -ra "$@"
echo "== the optional compiled hot path (mypyc): built, its tests, removed again"
if command -v gcc >/dev/null; then
  trap 'bash scripts/build-mypyc.sh --clean >/dev/null' EXIT
  bash scripts/build-mypyc.sh --test
  bash scripts/build-mypyc.sh --clean
else
  echo "no C compiler: the compiled path is not built here"
fi
echo "== bench (short mode)"
python3 bench/bench_engine.py --peers 20000 --duration 120
python3 bench/bench_million.py --short
python3 bench/bench_store.py --peers 20000 --samples 50000 --duration 3 --rate 5000
python3 bench/bench_e2e.py --short
python3 bench/bench_workers.py --short
python3 bench/bench_reuseport.py --sockets 2 --responders 1000
python3 bench/bench_integration.py --peers 5000 --clients 20 --duration 15 --flaky-pct 10 --warmup 12
python3 bench/bench_register.py --users 1000 --rate 500 --sources 10
python3 bench/bench_flood.py --short
python3 bench/bench_dashboard.py --short
python3 bench/bench_tls.py --short
python3 bench/bench_realtime.py --peers 5000
python3 bench/sim_cluster.py --short
python3 bench/bench_pjsip_ami.py --short
python3 bench/bench_fleet_events.py --paced 100 --burst 5000
python3 bench/bench_vantage.py --short
python3 bench/bench_sendto.py --short
python3 bench/bench_instructions.py --short
python3 bench/bench_config_memory.py --peers 20000
python3 bench/bench_daemon_trace.py --peers 5000 --after 70 --heap
