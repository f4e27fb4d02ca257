"""The published JSON schemas of medseg's outputs, for code that reads them (a hospital's integration, a pipeline).

- ``findings.schema.json``: a case's ``<case>_findings.json``;
- ``infer_summary.schema.json``: a batch's ``infer_summary.json``.

Both are JSON Schema (draft 2020-12). Fields may be added in later versions; the fields they list keep their names,
types and meaning. Validate with any JSON Schema library, e.g. ``jsonschema.validate(findings, medseg.schemas.load(
"findings"))``.
"""

from __future__ import annotations

import json
from importlib import resources

NAMES = ("findings", "infer_summary")


def path(name: str):
    """The schema file of ``name`` (``findings`` or ``infer_summary``) inside the installed package."""
    if name not in NAMES:
        raise ValueError(f"no medseg schema named {name!r}; there are {', '.join(NAMES)}")
    return resources.files(__name__) / f"{name}.schema.json"


def load(name: str) -> dict:
    """The schema of ``name`` as a dict."""
    return json.loads(path(name).read_text(encoding="utf-8"))
