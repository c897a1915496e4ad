#!/usr/bin/env python3
"""Derive registry/tables.json (embedded in the binary at build time) from a Defender
schemas.json reference, given as the first argument:

    python3 tools/build_registry.py path/to/schemas.json

Keeps, per table: the category, the export container, and the columns in documented order
with their Kusto type. Adds the properties seen on the wire but not documented (e.g.
`MachineGroup`) as typed columns marked "observed", so that real rows do not spill them into
`_rescued`. Drops Log Analytics system columns that are never streamed in `properties`.
Wire-only case variants (`ISP` vs documented `Isp`) are not added: the registry matches keys
case-insensitively.
"""
import json
import sys
from pathlib import Path

JSON_TO_KUSTO = {"str": "string", "int": "long", "float": "real", "bool": "bool",
                 "list": "dynamic", "dict": "dynamic", "NoneType": "string"}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: build_registry.py <schemas.json>  (the Defender schema reference)")
    src = Path(sys.argv[1])
    out = Path(__file__).resolve().parents[1] / "registry/tables.json"
    ref = json.loads(src.read_text())
    tables = []
    for name, t in ref["tables"].items():
        cols = []
        seen = set()
        for c in t["columns"]:
            if c.get("log_analytics_system_column"):
                continue
            cols.append({"name": c["name"], "type": c["type"]})
            seen.add(c["name"].lower())
        for p in t.get("observed_in_samples", {}).get("undocumented_properties", []):
            if p["name"].lower() in seen or p.get("case_variant_of"):
                continue
            kinds = [k for k in p["json_types_seen"] if k != "NoneType"] or ["NoneType"]
            # a property seen both as "0" and false is a bool with lenient coercion
            kusto = "bool" if "bool" in kinds else JSON_TO_KUSTO[kinds[0]]
            cols.append({"name": p["name"], "type": kusto, "observed": True})
            seen.add(p["name"].lower())
        tables.append({"name": name, "category": t["category"],
                       "container": t["container"], "columns": cols})
    doc = {"source": "Derived by tools/build_registry.py from the Defender XDR advanced hunting "
                     "schema reference (schemas.json). " + ref["source"],
           "tables": tables}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}: {len(tables)} tables, {sum(len(t['columns']) for t in tables)} columns")


if __name__ == "__main__":
    main()
