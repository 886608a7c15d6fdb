"""libp2p's protobuf messages: the ``.proto`` sources and their declarations for our codec.

Each ``<name>.proto`` here is the wire contract (copied field for field from the libp2p
specs); ``<name>.py`` declares the same messages for :mod:`flarelab.protobuf`. A test checks
that the two agree and that our encoding matches the official protobuf runtime's.
Only codec modules touch these messages; they validate and convert to our own types.
"""
