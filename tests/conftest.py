"""Settings for the whole suite."""

from __future__ import annotations

from hypothesis import settings

# No per-example deadline: on a loaded 2-core machine (CI, or tests running beside each other) an example
# that first imports milvus-lite's parser took 260-500 ms against hypothesis's default 200 ms and failed
# as DeadlineExceeded; what the property tests check is correctness, and benchmarks measure speed.
settings.register_profile("tandem", deadline=None)
settings.load_profile("tandem")
