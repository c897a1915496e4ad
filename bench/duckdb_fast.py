#!/usr/bin/env python3
"""The same job as `xdr-ingest ingest` (and as bench/duckdb_job.py, the plain DuckDB job), in the
cheapest formulation we found, so that bench/compare.py measures xdr-ingest against the best
DuckDB we can write, not a straw man: read JSON lines, explode Event Hub envelopes, route by
category, typed columns per table (types from registry/tables.json, a value that does not fit
becomes NULL), the raw record kept, tenant and envelope time kept, zstd Parquet per table;
categories the registry does not know with a plausible table name land untyped (`Timestamp`,
`properties` as JSON text) as xdr-ingest does; bad records apart (not JSON, unknown category,
no parseable Timestamp, not UTF-8). Prints rows per table as JSON (`_bad`: the bad records).

How it was found (records per CPU-second, 60 MB per form, 2 cores; bench/compare.py measures
CPU as user+sys of the whole process): each step below was measured against the one before.
- threads = 1. The job is 26 small per-table queries after one pass over the input; DuckDB's
  second worker costs far more CPU (scheduling, waiting) than it saves wall: 30-40 % less CPU.
- Tables are written by 2 Python threads on their own cursors (threads = 1 each): the same CPU
  as one after the other, ~30 % less wall.
- read_csv of raw lines (a delimiter and quote that never occur) as the source, streamed into
  the routing pass instead of a materialized table of lines; store_rejects keeps the lines that
  are not UTF-8 (ignore_errors would drop them silently). read_json(records=false) was no
  cheaper and loses the text of bad lines; trim() on every line cost more than the parse.
- One routing pass: TRY(json_transform(raw, {category, tenantId, time, properties.Timestamp}))
  parses each record once for routing, validity (a parse error gives NULL) and the Timestamp
  check; cheaper than json_valid + json_extract. Event Hub bodies are exploded with
  TRY(json_transform(line, {"records": ["VARCHAR"]})) - half the cost of
  CAST(json_extract(...) AS JSON[]).
- Per table, one json_transform of the table's records into the typed struct. Every property
  as VARCHAR then TRY_CAST to the column type measured the same or slightly dearer (typed
  transforms are not slower in DuckDB 1.4), so the typed transform stays. One wide transform
  of every record into the union of all tables' columns (one parse in total) was 1.4-2x dearer:
  a 370-column routing table. One self-contained query per table straight from the files (a
  CTE per table, no routing table) was ~6x dearer.
- COPY with zstd level 1, the level xdr-ingest writes (src/sink/table.rs): ~-0.1 CPU-s per 60 MB
  against DuckDB's default level 3, and no larger files. Bloom filters off, PARQUET_VERSION v2,
  dictionary limits: no measurable difference. ROW_GROUP_SIZE: every table is one row group.

usage: duckdb_fast.py <form: storage|eventhub> <out dir> <input files...>
"""
import json
import os
import sys
import threading

import duckdb

TYPES = {"string": "VARCHAR", "guid": "VARCHAR", "dynamic": "JSON", "long": "BIGINT",
         "int": "INTEGER", "bool": "BOOLEAN", "real": "DOUBLE", "double": "DOUBLE",
         "datetime": "TIMESTAMPTZ"}
# zstd level 1, as xdr-ingest's writer (src/sink/table.rs)
PARQUET = "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1"
# a category the registry does not know gets an untyped table named as the category without
# `AdvancedHunting-`, if that is a plausible table name (src/decode.rs untyped_table_name)
STRIPPED = "regexp_replace(category, '^(?i:advancedhunting-)', '')"
PLAUSIBLE = f"regexp_full_match({STRIPPED}, '[A-Za-z][A-Za-z0-9]{{1,63}}')"


def lit(s):
    return "'" + s.replace("'", "''") + "'"


def main():
    form, out, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    here = os.path.dirname(os.path.abspath(__file__))
    registry = json.load(open(os.path.join(here, "..", "registry", "tables.json")))
    tables = registry["tables"]
    os.makedirs(out, exist_ok=True)
    con = duckdb.connect(config={"threads": 1, "preserve_insertion_order": False})
    file_list = "[" + ",".join(lit(f) for f in files) + "]"
    # one VARCHAR per line: a delimiter and quote that never occur; lines that are not UTF-8
    # go to the rejects table (reject_errors), not silently away
    lines = (f"(SELECT line FROM read_csv({file_list}, columns = {{'line': 'VARCHAR'}}, "
             "delim = '\\x01', quote = '', escape = '', header = false, auto_detect = false, "
             "ignore_errors = true, store_rejects = true) WHERE line <> '')")
    if form == "eventhub":
        # one parse per body: the records' text (a body that is not JSON, or has no records
        # list, keeps its line for _bad)
        con.execute(f"""CREATE TABLE body AS
            SELECT CASE WHEN r IS NULL THEN line END AS line, r
            FROM (SELECT line, TRY(json_transform(line, '{{"records": ["VARCHAR"]}}')).records AS r
                  FROM {lines})""")
        records = "(SELECT unnest(r) AS raw FROM body)"
        bad_lines = "SELECT line FROM body WHERE r IS NULL"
    else:
        records = f"(SELECT line AS raw FROM {lines})"
        bad_lines = "SELECT NULL::VARCHAR WHERE false"
    # one parse per record for routing: category (case-insensitive, as xdr-ingest), envelope,
    # Timestamp; a record that is not JSON gives NULL, so no json_valid pass
    envelope = json.dumps({"category": "VARCHAR", "tenantId": "VARCHAR", "time": "VARCHAR",
                           "properties": {"Timestamp": "VARCHAR"}})
    con.execute(f"""CREATE TABLE routed AS
        SELECT raw, e.category AS category, lower(e.category) AS cat, e.tenantId AS tenant,
               TRY_CAST(e.time AS TIMESTAMPTZ) AS time,
               TRY_CAST(e.properties.Timestamp AS TIMESTAMPTZ) AS ts
        FROM (SELECT raw, TRY(json_transform(raw, {lit(envelope)})) AS e FROM {records})""")
    by_cat = {t["category"].lower(): t for t in tables}
    known = ",".join(lit(c) for c in by_cat)
    counts = {by_cat[c]["name"]: n for c, n in con.execute(
        f"SELECT cat, count(*) FROM routed WHERE cat IN ({known}) AND ts IS NOT NULL GROUP BY cat"
    ).fetchall()}

    def copy_table(cur, t):
        # one parse per record: json_transform into the table's typed struct (lenient: a value
        # that does not fit becomes NULL)
        props = json.dumps({"properties": {c["name"]: TYPES[c["type"]] for c in t["columns"]}})
        cur.execute(f"""COPY (
            SELECT unnest(p), raw AS _raw, tenant AS _tenant_id, time AS _time
            FROM (SELECT raw, tenant, time, json_transform(raw, {lit(props)}).properties AS p
                  FROM routed WHERE cat = {lit(t['category'].lower())} AND ts IS NOT NULL))
            TO {lit(os.path.join(out, t['name'] + '.parquet'))} ({PARQUET})""")

    # the tables on parallel cursors, largest first (threads = 1 each: the same CPU as one
    # after the other, less wall)
    todo = sorted((t for t in tables if counts.get(t["name"])), key=lambda t: -counts[t["name"]])
    lock = threading.Lock()
    errors = []

    def worker():
        try:
            cur = con.cursor()
            while True:
                with lock:
                    if not todo or errors:
                        return
                    t = todo.pop(0)
                copy_table(cur, t)
        except Exception as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    workers = [threading.Thread(target=worker) for _ in range(min(os.cpu_count() or 1, 4))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]

    # categories the registry does not know, with a plausible name: untyped tables
    con.execute(f"""CREATE TABLE untyped AS
        SELECT {STRIPPED} AS tname, ts AS "Timestamp", json_extract(raw, '$.properties') AS p,
               raw AS _raw, tenant AS _tenant_id, time AS _time
        FROM routed WHERE cat NOT IN ({known}) AND {PLAUSIBLE}""")
    for name, n in con.execute("SELECT tname, count(*) FROM untyped WHERE json_type(p) = 'OBJECT' "
                               "GROUP BY tname").fetchall():
        os.makedirs(os.path.join(out, "_untyped"), exist_ok=True)
        con.execute(f"""COPY (SELECT "Timestamp", p::VARCHAR AS properties, _raw, _tenant_id, _time
                              FROM untyped WHERE tname = {lit(name)} AND json_type(p) = 'OBJECT')
                        TO {lit(os.path.join(out, '_untyped', name + '.parquet'))} ({PARQUET})""")
        counts[name] = n

    con.execute(f"""CREATE TABLE bad AS
        SELECT trim(csv_line, chr(13) || chr(10)) AS raw FROM reject_errors
        UNION ALL {bad_lines}
        UNION ALL SELECT raw FROM routed
        WHERE CASE WHEN cat IS NULL THEN true
                   WHEN cat IN ({known}) THEN ts IS NULL
                   WHEN {PLAUSIBLE} THEN json_type(json_extract(raw, '$.properties'))
                                         IS DISTINCT FROM 'OBJECT'
                   ELSE true END""")
    counts["_bad"] = con.execute("SELECT count(*) FROM bad").fetchone()[0]
    con.execute(f"COPY bad TO {lit(os.path.join(out, '_bad.parquet'))} ({PARQUET})")
    print(json.dumps(counts, sort_keys=True))


if __name__ == "__main__":
    main()
