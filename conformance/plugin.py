"""pytest plugin of the conformance suite (options, reporting); filled in by the conformance work."""
