#!/usr/bin/env bash
# Compile sipqualify's hot modules with mypyc, in place (next to their .py files in src/), so that
# PYTHONPATH=src or an editable install runs them compiled. Optional: the pure-Python modules stay
# the default and are what the tests run unless this was done. The module list is setup.py's.
#
#   scripts/build-mypyc.sh           # build (needs gcc and Python headers; ~40 s on 2 cores)
#   scripts/build-mypyc.sh --test    # build, then the engine/SIP tests against the compiled modules
#   scripts/build-mypyc.sh --clean   # remove the compiled modules: back to pure Python
#
# A compiled module shadows its .py: after editing a listed module, build again or --clean.
set -euo pipefail
cd "$(dirname "$0")/.."
clean() {
  find src -name '*.cpython-*.so' -delete
  rm -rf build/mypyc build/temp.* build/lib.* build/__native*
}
case "${1:-}" in
  --clean) clean; echo "compiled modules removed: pure Python"; exit 0 ;;
esac
clean
SIPQUALIFY_MYPYC=1 python3 setup.py build_ext --inplace >build-mypyc.log 2>&1 || { tail -30 build-mypyc.log; exit 1; }
mv build-mypyc.log build/ 2>/dev/null || true
# setup.py's --inplace puts the modules next to their sources under src/; the shared runtime
# library (<hash>__mypyc*.so) lands in the top directory: it belongs beside the package
for lib in ./*__mypyc*.so; do [ -e "$lib" ] && mv "$lib" src/; done
echo "compiled:"; find src -name '*.cpython-*.so' | sort
if [ "${1:-}" = "--test" ]; then
  PYTHONPATH="$PWD/src" python3 -c 'import sipqualify.qualify.engine as e; assert e.__file__.endswith(".so"), e.__file__'
  # the batched UDP I/O (net/_mmsg.c, recvmmsg/sendmmsg) is built with them on Linux
  PYTHONPATH="$PWD/src" python3 -c 'import sipqualify.net.udp as u; assert u.HAVE_MMSG, "net/_mmsg.c not built"'
  # and the response fast path's rules in C (sip/_speedups.c), which the engine then calls
  PYTHONPATH="$PWD/src" python3 -c 'import sipqualify.sip.fastpath as f; assert f.PEEK is f.PEEK_C, "sip/_speedups.c not built"'
  # deselected: it counts parse_message calls by monkeypatching the module attribute, which a
  # compiled caller does not look up (mypyc binds module globals at import); not a behaviour change
  # tests/workers: `run --workers N` subclasses the compiled engine in Python (workers/mirror.py)
  # the driver and the UDP endpoint (the daemon's shell): their own tests, and the daemon over UDP
  PYTHONPATH="$PWD/src" python3 -m pytest -q -p no:warnings tests/sip tests/qualify tests/sip_txn tests/workers \
    tests/test_driver_turns.py tests/test_driver_stamps.py tests/test_overload_sockets.py tests/test_udp_buffers.py \
    tests/test_qualify_source.py tests/test_registrar.py tests/store/test_sample_every.py tests/test_webhooks_verdict.py \
    tests/test_metrics.py tests/test_udp_batched.py tests/test_inbound_endpoint.py tests/test_registrar_hardening.py \
    tests/test_registrar_rules.py tests/test_pjsip_inbound.py tests/test_pjsip_registrar.py tests/test_pjsip_identify.py \
    --deselect tests/qualify/test_hostile_and_shape.py::test_a_flood_from_one_source_is_dropped_before_parsing
fi
