"""Find a single image's clinical metadata from its data set's own table (PH2_dataset.txt, LGG data.csv)."""

from __future__ import annotations

import re
from pathlib import Path


def lookup_metadata(path: str | Path, levels: int = 4) -> dict:
    """Metadata for one image when it sits inside a PH2 or LGG layout; ``{}`` otherwise."""
    from medseg.data.lgg import SLICE_RE, _read_csv, patient_key
    from medseg.data.ph2 import CASE_RE, find_table, parse_table

    p = Path(path)
    parents = list(p.parents)[:levels]
    m = re.match(r"^(IMD\d+)", p.name, re.IGNORECASE)
    if m and CASE_RE.match(m.group(1)):
        for d in parents:
            table = find_table(d, None)
            if table:
                return dict(parse_table(table).get(m.group(1).upper(), {}))
    stem = p.name.split(".")[0]
    sm = SLICE_RE.match(stem)
    if stem.upper().startswith("TCGA_") and sm:
        for d in parents:
            if (d / "data.csv").is_file():
                rows, _ = _read_csv(d)
                return dict(rows.get(patient_key(sm.group("stem")), {}))
    return {}
