"""Tools beside lrlab: the tracking server and the benchmarks. Nothing in lrlab imports them."""
