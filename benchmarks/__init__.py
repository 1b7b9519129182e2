"""The performance suite: ``python -m benchmarks.run [--scenario NAME] [--quick]`` (``make bench``).

Every scenario runs its arms side by side on the same backends and reports ratios, so the figures
hold on a noisy shared machine. Not part of ``make test``; the pure parts (the Eq. 4 model, the
HAProxy config, result tables) have fast tests in ``tests/benchmarks``.
"""
