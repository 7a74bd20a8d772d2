"""Cross-namespace references (ReferenceGrant): the rule is the platforms' common one."""

from tandem.core.grants import reference_allowed

__all__ = ["reference_allowed"]
