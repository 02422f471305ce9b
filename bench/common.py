"""Helpers shared by the benchmarks."""


def rss_mib() -> float:
    """This process's resident set size, MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")
