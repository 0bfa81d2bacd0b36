"""lookalike's benchmarks: one script per figure in docs/benchmarks.md, each run from the
repository root as ``python -m bench.NAME`` (``make bench`` runs ``bench.encoder``).

They use lookalike's public API (:mod:`lookalike.library`, ``lookalike.open``) for whatever opens
a workspace to index or search; a benchmark of one layer below it (the model, an executor service,
a shard index) uses that layer's classes, since they are what it measures. The helpers only they
need live here too: :mod:`bench.baselines` (the naive pipeline), :mod:`bench.synthetic` (realistic
vectors at scale) and :mod:`bench.raycluster` (a two-node Ray cluster on loopback, which the Ray
tests use as well).
"""
