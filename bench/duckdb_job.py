#!/usr/bin/env python3
"""The same job as `xdr-ingest ingest`, done by DuckDB, for the side-by-side benchmark:
read JSON lines, explode Event Hub envelopes, route by category, typed columns per table
(types from registry/tables.json), the raw record kept, zstd Parquet per table, bad records
apart (not JSON, unknown category, no parseable Timestamp). Prints rows per table as JSON.

usage: duckdb_job.py <form: storage|eventhub> <out dir> <input files...>
"""
import json
import os
import sys

import duckdb

TYPES = {"string": "VARCHAR", "guid": "VARCHAR", "dynamic": "JSON", "long": "BIGINT",
         "int": "INTEGER", "bool": "BOOLEAN", "real": "DOUBLE", "double": "DOUBLE",
         "datetime": "TIMESTAMPTZ"}


def main():
    form, out, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    here = os.path.dirname(os.path.abspath(__file__))
    registry = json.load(open(os.path.join(here, "..", "registry", "tables.json")))
    os.makedirs(out, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    file_list = "[" + ",".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
    # one VARCHAR per line: a delimiter and quote that never occur
    con.execute(f"""
        CREATE TEMP TABLE lines AS
        SELECT line FROM read_csv({file_list}, columns = {{'line': 'VARCHAR'}}, delim = '\\x01',
                                  quote = '', escape = '', header = false, auto_detect = false,
                                  ignore_errors = true, null_padding = false)
        WHERE line IS NOT NULL AND trim(line) <> ''""")
    if form == "eventhub":
        con.execute("""
            CREATE TEMP TABLE recs AS
            SELECT r::VARCHAR AS raw FROM (
              SELECT unnest(CAST(json_extract(line, '$.records') AS JSON[])) AS r
              FROM lines WHERE json_valid(line))""")
        con.execute("CREATE TEMP TABLE bad AS SELECT line AS raw FROM lines WHERE NOT json_valid(line)")
    else:
        con.execute("CREATE TEMP TABLE recs AS SELECT line AS raw FROM lines WHERE json_valid(line)")
        con.execute("CREATE TEMP TABLE bad AS SELECT line AS raw FROM lines WHERE NOT json_valid(line)")
    con.execute("""
        CREATE TEMP TABLE routed AS
        SELECT raw, category, lower(category) AS cat
        FROM (SELECT raw, json_extract_string(raw, '$.category') AS category FROM recs)""")
    counts = {}
    for t in registry["tables"]:
        # one parse per record: json_transform into the table's typed struct (lenient: a value
        # that does not fit becomes NULL), instead of one json_extract (a parse) per column
        props = {c["name"]: TYPES[c["type"]] for c in t["columns"]}
        structure = json.dumps({"tenantId": "VARCHAR", "time": "TIMESTAMPTZ", "properties": props})
        cat = t["category"].lower().replace("'", "''")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE typed AS
                        SELECT unnest(s.properties), raw AS _raw, s.tenantId AS _tenant_id,
                               s.time AS _time
                        FROM (SELECT raw, json_transform(raw, '{structure.replace("'", "''")}') AS s
                              FROM routed WHERE cat = '{cat}')""")
        con.execute("INSERT INTO bad SELECT _raw FROM typed WHERE \"Timestamp\" IS NULL")
        n = con.execute('SELECT count(*) FROM typed WHERE "Timestamp" IS NOT NULL').fetchone()[0]
        if n:
            con.execute(f"""COPY (SELECT * FROM typed WHERE "Timestamp" IS NOT NULL)
                            TO '{out}/{t['name']}.parquet' (FORMAT parquet, COMPRESSION zstd)""")
            counts[t["name"]] = n
    known = ",".join("'" + t["category"].lower() + "'" for t in registry["tables"])
    # a category the registry does not know, with a plausible table name (the category without
    # `AdvancedHunting-`): an untyped table of its own (Timestamp, properties as JSON text), as
    # xdr-ingest does; any other category is a bad record
    name = "regexp_replace(category, '^(?i:advancedhunting-)', '')"
    untyped = (f"regexp_full_match({name}, '[A-Za-z][A-Za-z0-9]{{1,63}}') "
               "AND json_type(json_extract(raw, '$.properties')) IS NOT DISTINCT FROM 'OBJECT'")
    con.execute(f"CREATE TEMP TABLE unknown AS SELECT raw, category FROM routed WHERE cat NOT IN ({known})")
    con.execute(f"""CREATE TEMP TABLE untyped AS
                    SELECT {name} AS tname,
                           TRY_CAST(json_extract_string(raw, '$.properties.Timestamp') AS TIMESTAMPTZ)
                             AS "Timestamp",
                           json_extract(raw, '$.properties')::VARCHAR AS properties, raw AS _raw,
                           json_extract_string(raw, '$.tenantId') AS _tenant_id,
                           TRY_CAST(json_extract_string(raw, '$.time') AS TIMESTAMPTZ) AS _time
                    FROM unknown WHERE {untyped}""")
    for (tname, n) in con.execute("SELECT tname, count(*) FROM untyped GROUP BY tname").fetchall():
        os.makedirs(f"{out}/_untyped", exist_ok=True)
        con.execute(f"""COPY (SELECT * EXCLUDE (tname) FROM untyped WHERE tname = '{tname}')
                        TO '{out}/_untyped/{tname}.parquet' (FORMAT parquet, COMPRESSION zstd)""")
        counts[tname] = n
    con.execute("INSERT INTO bad SELECT raw FROM routed WHERE category IS NULL")
    con.execute(f"INSERT INTO bad SELECT raw FROM unknown WHERE NOT ({untyped})")
    counts["_bad"] = con.execute("SELECT count(*) FROM bad").fetchone()[0]
    con.execute(f"COPY bad TO '{out}/_bad.parquet' (FORMAT parquet, COMPRESSION zstd)")
    print(json.dumps(counts, sort_keys=True))


if __name__ == "__main__":
    main()
