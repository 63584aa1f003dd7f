"""Loss-kernel throughput: interleaved timing, roofline ratios, peak memory, targets (``python -m harness throughput``)."""
