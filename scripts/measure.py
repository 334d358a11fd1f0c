#!/usr/bin/env python3
"""Run a command; print its wall time (s) and peak RSS (MiB) of it and its children.

usage: measure.py [--cpu] CMD [ARGS...]   -> prints "seconds peak_mib" on stdout's last line
With --cpu, a third field: the CPU seconds (user + system) of it and its children.
"""
import resource, subprocess, sys, time

args = sys.argv[1:]
cpu = args[:1] == ["--cpu"]
if cpu:
    args = args[1:]
t0 = time.monotonic()
rc = subprocess.call(args, stdout=subprocess.DEVNULL)
elapsed = time.monotonic() - t0
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
peak = usage.ru_maxrss / 1024
if cpu:
    print(f"{elapsed:.3f} {peak:.1f} {usage.ru_utime + usage.ru_stime:.2f}")
else:
    print(f"{elapsed:.3f} {peak:.1f}")
sys.exit(rc)
