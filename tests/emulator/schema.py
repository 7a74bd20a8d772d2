"""Moved to :mod:`tandem.api.admission.schema`, one implementation for the emulator and `tandem validate`.

This name stays an alias of that module for the tests that import it from here.
"""

import sys

from tandem.api.admission import schema as _schema

sys.modules[__name__] = _schema
