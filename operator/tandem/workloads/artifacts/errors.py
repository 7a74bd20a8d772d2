"""Why publishing or fetching an adapter artifact failed; `reason` is a CamelCase condition reason."""

from __future__ import annotations


class ArtifactError(Exception):
    reason = "ArtifactError"
    # Whether trying again later may help (the CLI exits EXIT_RETRY then, EXIT_PERMANENT otherwise).
    transient = False


class ArtifactDigestMismatch(ArtifactError):
    """What was read is not what was asked for: an adapter folder, a blob or a manifest whose digest
    differs from the expected one. Nothing of it is kept."""

    reason = "ArtifactDigestMismatch"

    def __init__(self, what: str, expected: str, found: str) -> None:
        super().__init__(f"{what}: expected digest {expected}, found {found}; refused and deleted")
        self.what, self.expected, self.found = what, expected, found


class ArtifactInvalid(ArtifactError):
    """Not an adapter artifact: a manifest or archive that cannot be read as one."""

    reason = "ArtifactInvalid"


class ArtifactUnsafe(ArtifactInvalid):
    """An archive member that could write outside the folder or is not a plain file or directory."""

    reason = "ArtifactUnsafe"


class ArtifactTooLarge(ArtifactError):
    """More bytes than the stated limit; `read` is how many were read when it stopped."""

    reason = "ArtifactTooLarge"

    def __init__(self, what: str, limit: int, read: int) -> None:
        super().__init__(f"{what}: larger than the limit of {limit} bytes (stopped after {read})")
        self.limit, self.read = limit, read


class ArtifactNotFound(ArtifactError):
    reason = "ArtifactNotFound"


class ArtifactAccessDenied(ArtifactError):
    reason = "ArtifactAccessDenied"


class ArtifactUnavailable(ArtifactError):
    """The store cannot be reached or answered with a server error."""

    reason = "ArtifactUnavailable"
    transient = True
