"""Byte units at the edges of ftcalc (inside, everything is bytes): GiB = 2^30 bytes, GB = 10^9 bytes."""

GIB = 2**30
GB = 10**9
