"""Resilience drills: the dirty failures of production, injected into the native stack (real
Postgres, Redis, Gunicorn and nginx) while users keep reading and writing through nginx TLS.

`make drill` (python -m drills) runs them all with the documented fault durations and writes
docs/resilience.md; tests/drills runs each one shorter and fails on any broken promise.
"""
