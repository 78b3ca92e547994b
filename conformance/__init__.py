"""Conformance suite for servers of the encrypted backup protocol, version 3 (a pytest plugin).

Run ``pytest conformance --bp-target host:port`` from a checkout, or
``pytest --pyargs conformance --bp-target host:port`` after ``pip install backupproto[conformance]``.
The public API for writing cases is `conformance.case`.
"""
