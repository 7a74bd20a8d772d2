"""Evaluation: ask an endpoint's routes a question set and score them on one scorecard
(`python -m tandem.workloads.evaluation`)."""
