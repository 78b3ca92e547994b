"""Client mode of the conformance suite: a scripted server on loopback plays one case to the
client under test (started by the suite, or by hand with ``--bp-client-listen``), then the case
judges what the client sent, wrote, printed and how it exited."""
