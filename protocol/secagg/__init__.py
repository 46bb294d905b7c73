"""Secure aggregation for buffered asynchronous FL (SecAgg / SecAgg+ style, semi-honest server).

The server learns only the sum of a cohort's fixed-point updates. Modules, bottom up:

    fixedpoint   clip, stochastic rounding into Z_{2^b}, scale chosen so K updates cannot wrap
    prg          X25519 agreement, HKDF, ChaCha20 mask expansion, share encryption
    shamir       t-of-n Shamir sharing over the prime field 2^521 - 1
    randomk      shared-seed random-k coordinate selection (the same support for every member)
    graph        SecAgg+ neighbourhoods (complete graph or a seeded ring of degree d)
    messages     wire messages (msgpack, schema-versioned, decoded cheapest check first)
    device       the device's pure state machine for one cohort
    cohort       the server's pure state machine for one cohort

Pure: no I/O, no clock; randomness comes from the caller (os.urandom-backed by default).
"""

from protocol.secagg.errors import SecAggError, SecAggReason

__all__ = ["SecAggError", "SecAggReason"]
