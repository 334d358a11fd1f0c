#!/usr/bin/env python3
"""Run a command; print its wall time (s) and peak RSS (MiB) of it and its children.

usage: measure.py CMD [ARGS...]   -> prints "seconds peak_mib" on stderr's last line
"""
import resource, subprocess, sys, time

t0 = time.monotonic()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
elapsed = time.monotonic() - t0
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{elapsed:.3f} {peak:.1f}")
sys.exit(rc)
