"""The platform-neutral core: every decision both platforms need, made once, as pure functions.

`platform/kubernetes` (the operator) and `platform/local` (`tandem up`) both turn a resource's spec into
work for the same workloads. What that work is (the job contracts the workloads parse, adapter versions,
routes, the gateway's configuration, vLLM's arguments, collection names, and the status a workload's
result means) is decided here, so the two platforms cannot disagree. Nothing here does I/O or knows
which platform calls it; neither platform imports the other.
"""
