"""The input contract: schema and vocabularies, reading with quarantine, email/phone normalisation."""

from jobs.contract.reading import *  # noqa: F401,F403 - transitional: the module is being split (issue 10)
from jobs.contract.reading import _coerce, _null  # noqa: F401
from jobs.contract.schema import *  # noqa: F401,F403
