"""Reports how it was run (no model): argv, __name__, the path, and which nnsight it imported."""
import json
import sys

import nnsight
from nnsight import CONFIG, LanguageModel, NNsight, save  # noqa: F401  (the everyday surface)
from nnsight.intervention.interleaver import OutOfOrderError  # noqa: F401

import probe_sibling  # found only if this script's folder is on sys.path

print(json.dumps({"argv": sys.argv, "name": __name__, "path0": sys.path[0], "nnsight": nnsight.__file__,
                  "sibling": probe_sibling.VALUE}))
