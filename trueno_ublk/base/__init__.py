"""The base layer: facts every other layer shares -- errors, units, limits,
/proc, the ublk control protocol, the codecs, the statistics table, logging."""
