"""The rows of a synthetic store: pools of shared rows, then records in batches.

All randomness comes from one seeded `random.Random`, drawn in a fixed order: the same
arguments give the same rows. Rows are tuples in the column order of `sumatra_tables()`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from .vocabulary import (
    _LOCAL_MODULES,
    _LOG_TEMPLATES,
    _OUTCOMES,
    _OUTPUTS,
    _PACKAGES,
    _PARAM_NAMES,
    _PLANT_COLUMNS,
    _PLANTS,
    _PROJECT_NAMES,
    _REASONS,
    _TAG_WORDS,
    _USERS,
    MIN_RECORDS_OVERLONG,
)

BATCH = 2000  # records per executemany round: keeps memory flat, amortises call overhead

# The tables filled, by their name without `django_store_`; rows of each are tuples in the
# column order of `sumatra_tables()`.
_TABLES = (
    "project",
    "executable",
    "repository",
    "launchmode",
    "datastore",
    "platforminformation",
    "dependency",
    "tag",
    "parameterset",
    "record",
    "datakey",
    "record_input_data",
    "record_dependencies",
    "record_platforms",
    "taggeditem",
)

# Parents before children within a batch (foreign keys are not enforced, but keep it tidy):
# the per-record tables, in the order of `_TABLES`.
_BATCH_ORDER = _TABLES[_TABLES.index("parameterset") :]


def _fit(head: str, tail: str, length: int, filler: str) -> str:
    """`head` + repeated `filler` + `tail`, exactly `length` characters (no `//` at the seam)."""
    n = length - len(head) - len(tail)
    if n < 0:
        raise ValueError(f"cannot fit {head!r}...{tail!r} into {length} characters")
    mid = (filler * (n // len(filler) + 1))[:n]
    if mid.endswith("/") and tail.startswith("/"):
        mid = mid[:-1] + "x"
    return head + mid + tail


def _hex40(rng: random.Random) -> str:
    return f"{rng.getrandbits(160):040x}"


def _dt(value: datetime) -> str:
    # Django's SQLite adapter writes naive UTC datetimes with str(): fraction only if nonzero.
    return str(value)


def _columns(table: str) -> tuple[str, ...]:
    """Columns of `django_store_<table>` in the order of today's models: the row tuples'."""
    from smtmigrate.schema import sumatra_tables

    return tuple(sumatra_tables()[f"django_store_{table}"].columns)


class _Builder:
    """Holds the pools and produces rows; all randomness comes from one seeded Random."""

    def __init__(self, records: int, seed: int, overlong: bool, projects: int) -> None:
        if records < 0 or projects < 1:
            raise ValueError("records must be >= 0 and projects >= 1")
        if overlong and records < MIN_RECORDS_OVERLONG:
            raise ValueError(f"overlong=True needs at least {MIN_RECORDS_OVERLONG} records")
        self.rng = random.Random(seed)
        self.records = records
        self.overlong = overlong
        self.n_projects = projects
        self.planted: dict[tuple[str, str], dict[str, int]] = {}
        # Pool sizes grow with the store up to what a long-lived real store accumulates.
        self.n_deps = min(3000, max(2 * (len(_PACKAGES) + len(_LOCAL_MODULES)), records // 30))
        self.n_tags = min(300, max(20, records // 300))
        self.n_inputs = min(5000, max(10, records // 20))
        self.pools: dict[str, list[tuple]] = {}
        self._build_pools()
        self._plan_plants()

    # -- pools -----------------------------------------------------------------------------

    def _build_pools(self) -> None:
        rng = self.rng
        self.projects: list[dict] = []
        for p in range(self.n_projects):
            base = _PROJECT_NAMES[p % len(_PROJECT_NAMES)]
            pid = base if p < len(_PROJECT_NAMES) else f"{base}-{p // len(_PROJECT_NAMES) + 1}"
            user, line = _USERS[p % len(_USERS)]
            home = f"/home/{user}/{pid}"
            self.projects.append({"id": pid, "user": user, "user_line": line, "home": home})
        # Sumatra creates Project(id=name) and nothing else: name and description stay empty.
        self.pools["project"] = [(p["id"], "", "") for p in self.projects]

        self.pools["executable"] = [
            (1, "/usr/bin/python3.11", "Python", "3.11.6", ""),
            (2, "/opt/conda/envs/sim/bin/python", "Python", "3.10.13", "-u"),
            (3, "/home/alice/.venv/bin/python", "Python", "3.12.1", ""),
            (4, "/usr/bin/Rscript", "R", "4.3.2", "--vanilla"),
            (5, "/usr/local/MATLAB/R2023b/bin/matlab", "Matlab", "23.2.0.2365128 (R2023b)",
             "-nodisplay -nosplash -r"),
            (6, "/usr/local/bin/nrniv", "NEURON", "8.2.3", "-python"),
        ]  # fmt: skip
        self.exe_weights = (60, 15, 15, 4, 3, 3)

        repos, modes, stores = [], [], []
        for p in self.projects:
            pid, home = p["id"], p["home"]
            p["repository"] = len(repos) + 1
            upstream = f"git@github.com:{p['user']}-lab/{pid}.git"
            repos.append((len(repos) + 1, "GitRepository", home, upstream))
            p["modes"] = []
            for n in (None, 4, 16):
                if n is None:
                    params = {"working_directory": home, "options": None}
                    kind = "SerialLaunchMode"
                else:
                    params = {
                        "mpirun": "/usr/bin/mpiexec",
                        "n": n,
                        "hosts": [],
                        "pfi_path": "/usr/local/bin/pfi.py",
                        "options": None,
                        "working_directory": home,
                    }
                    kind = "DistributedLaunchMode"
                p["modes"].append(len(modes) + 1)
                modes.append((len(modes) + 1, kind, str(params)))
            p["datastore"] = len(stores) + 1
            stores.append((len(stores) + 1, "FileSystemDataStore", str({"root": f"{home}/Data"})))
            p["input_datastore"] = len(stores) + 1
            stores.append((len(stores) + 1, "FileSystemDataStore", str({"root": home})))
            p["main_files"] = [f"src/models/run_{n}.py" for n in rng.sample(range(500), 30)]
            p["main_files"] += ["analysis/plot_results.py", "analysis/stats.py", "main.py"]
        self.pools["repository"] = repos
        self.pools["launchmode"] = modes
        self.pools["datastore"] = stores

        platforms = []
        for i in range(12):
            host = "laptop-alice" if i == 0 else f"node{i:02d}.cluster.example.org"
            kernel = rng.choice(("5.15.0", "6.1.0", "6.5.0"))
            build = rng.randint(20, 120)
            platforms.append((
                i + 1, "64bit", "ELF", "x86_64", host, f"10.1.{i // 8}.{10 + i}", "x86_64",
                f"{kernel}-{build}-generic", "Linux",
                f"#{build}-Ubuntu SMP PREEMPT_DYNAMIC Tue Nov 14 13:30:08 UTC 2023",
            ))  # fmt: skip
        self.pools["platforminformation"] = platforms

        # Each record depends on one version of each of 17-29 distinct packages, as real
        # records do; rows are unique, as get_or_create would leave them.
        dep_names = (*_PACKAGES, *_LOCAL_MODULES)
        self.dep_versions: list[list[int]] = [[] for _ in dep_names]
        deps: list[tuple] = []
        seen: set[tuple] = set()
        while len(deps) < self.n_deps:
            n = len(deps) % len(dep_names)  # cycle so that every name has rows
            name = dep_names[n]
            if name in _LOCAL_MODULES:  # the project's own modules, versioned by commit
                p = rng.choice(self.projects)
                diff = self._diff(f"src/{name.replace('.', '/')}.py") if rng.random() < 0.3 else ""
                path = f"{p['home']}/src/{name.replace('.', '/')}"
                source, version = f"git@github.com:{p['user']}-lab/{p['id']}.git", _hex40(rng)
            else:
                diff = ""
                version = f"{rng.randint(0, 4)}.{rng.randint(0, 30)}.{rng.randint(0, 12)}"
                if rng.random() < 0.05:
                    version = "unknown"
                source = f"https://github.com/{name}/{name}" if rng.random() < 0.2 else None
                pyver = rng.choice(("3.10", "3.11", "3.12"))
                path = f"/home/{rng.choice(_USERS)[0]}/.venv/lib/python{pyver}/site-packages/{name}"
            row = (name, path, version, diff, source, "python")
            if row in seen:
                continue
            seen.add(row)
            deps.append((len(deps) + 1, *row))
            self.dep_versions[n].append(len(deps))
        self.pools["dependency"] = deps

        names: list[str] = list(_TAG_WORDS)
        k = 0
        while len(names) < self.n_tags:
            names.append(f"{_TAG_WORDS[k % len(_TAG_WORDS)]}-{k // len(_TAG_WORDS) + 1:03d}")
            k += 1
        self.tag_names = names[: self.n_tags]
        self.pools["tag"] = [(i + 1, n) for i, n in enumerate(self.tag_names)]

        self.log_lines = []
        for _ in range(400):
            template = rng.choice(_LOG_TEMPLATES)
            self.log_lines.append(
                template.format(
                    a=rng.randint(1, 5000),
                    b=rng.randint(1, 5000),
                    f=rng.random() * 100,
                    g=rng.random() / 1000,
                    h=rng.random(),
                )
            )
        self.diffs = [self._diff(f"src/models/run_{rng.randint(0, 499)}.py") for _ in range(20)]

    def _diff(self, path: str) -> str:
        rng = self.rng
        a, b = rng.randint(1, 400), rng.randint(1, 9)
        old, new = rng.choice(_PARAM_NAMES), rng.choice(_PARAM_NAMES)
        return (
            f"diff --git a/{path} b/{path}\nindex {_hex40(rng)[:7]}..{_hex40(rng)[:7]} 100644\n"
            f"--- a/{path}\n+++ b/{path}\n@@ -{a},{b} +{a},{b} @@\n"
            f"-    {old} = {rng.random():.4f}\n+    {new} = {rng.random():.4f}\n"
        )

    # -- over-long plants -----------------------------------------------------------------

    def _plan_plants(self) -> None:
        """Spread the plants over distinct records; extend pools with the over-long rows."""
        self.plan: dict[int, tuple[str, int]] = {}
        if not self.overlong:
            return
        n = len(_PLANTS)
        for k, plant in enumerate(_PLANTS):
            self.plan[(2 * k + 1) * self.records // (2 * n)] = plant
        for kind, length in _PLANTS:
            table, column = _PLANT_COLUMNS[kind]
            slot = self.planted.setdefault((table, column), {"rows": 0, "max_length": 0})
            slot["rows"] += 1
            slot["max_length"] = max(slot["max_length"], length)

        # Over-long pool rows get ids after the normal pool, so random draws never pick them.
        home = self.projects[0]["home"]
        self.long_ids: dict[tuple[str, int], int] = {}
        for kind, length in _PLANTS:
            if kind == "executable_options":
                pool = self.pools["executable"]
                opts = _fit("-W ignore::DeprecationWarning ", "", length, "-X importtime ")
                pool.append((len(pool) + 1, "/usr/bin/python3.11", "Python", "3.11.6", opts))
            elif kind == "datastore_parameters":
                pool = self.pools["datastore"]
                empty = len(str({"root": ""}))
                root = _fit(f"{home}/Data/", "", length - empty, "archive_of_parameter_scan/")
                pool.append((len(pool) + 1, "FileSystemDataStore", str({"root": root})))
            elif kind == "platform_version":
                pool = self.pools["platforminformation"]
                version = _fit(
                    "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) ",
                    "",
                    length,
                    "CONFIG_PREEMPT_RT CONFIG_DEBUG_INFO_BTF +lockdep ",
                )
                pool.append((
                    len(pool) + 1, "64bit", "ELF", "x86_64", "rt-node.cluster.example.org",
                    "10.1.9.9", "x86_64", "6.1.0-18-rt-amd64", "Linux", version,
                ))  # fmt: skip
            elif kind == "dependency_version":
                pool = self.pools["dependency"]
                version = _fit("2.1.0.dev20240101+git.", "", length, "g3f9a2c71d8e4b5a6")
                pool.append((
                    len(pool) + 1, "nightlypkg", "/home/alice/.venv/lib/python3.11/site-packages/"
                    "nightlypkg", version, "", None, "python",
                ))  # fmt: skip
            elif kind == "tag_name":
                pool = self.pools["tag"]
                name = _fit(f"overlong-tag-{length}-", "", length, "described-at-length-")
                pool.append((len(pool) + 1, name))
            else:
                continue
            self.long_ids[(kind, length)] = len(pool)

    def _planted_tags(self, length: int) -> list[int]:
        """New tags (each <= 50 chars) whose comma-joined names are exactly `length` long."""
        n = math.ceil((length + 1) / 51)
        chars = length - (n - 1)
        pool = self.pools["tag"]
        ids = []
        for j in range(n):
            size = chars // n + (1 if j < chars % n else 0)
            pool.append((len(pool) + 1, _fit(f"t{length}-{j}-", "", size, "many-tags-")))
            ids.append(len(pool))
        return ids

    # -- records ---------------------------------------------------------------------------

    def _parameters(self) -> tuple[str, str]:
        """(type, content) as Sumatra stores str(ParameterSet): 200-500 characters."""
        rng = self.rng
        target = rng.randint(200, 500)
        kind = rng.random()
        if kind < 0.75:
            lines, size = [], 0
            while size < target:
                name = f"{rng.choice(_PARAM_NAMES)}_{len(lines)}"
                r = rng.random()
                if r < 0.5:
                    line = f"{name} = {rng.random() * 100!r}"
                elif r < 0.8:
                    line = f"{name} = {rng.randint(0, 100000)}"
                else:
                    line = f'{name} = "{rng.choice(_TAG_WORDS)}"'
                lines.append(line)
                size += len(line) + 1
            return "SimpleParameterSet", "\n".join(lines)
        groups: dict[str, dict[str, object]] = {}
        size = 0
        while size < target:
            group = groups.setdefault(rng.choice(("sim", "net", "stim", "analysis")), {})
            key = f"{rng.choice(_PARAM_NAMES)}_{len(group)}"
            group[key] = rng.random() * 10 if rng.random() < 0.6 else rng.randint(0, 1000)
            size += len(key) + 24
        return "NTParameterSet", str(groups)

    def batches(self, content_type: int) -> Iterator[dict[str, list[tuple]]]:
        """Yield the rows of BATCH records at a time, table by table."""
        rng = self.rng
        randint, rand, choice, sample = rng.randint, rng.random, rng.choice, rng.sample
        projects = self.projects
        n_tags, n_inputs = self.n_tags, self.n_inputs
        dep_versions = self.dep_versions
        n_dep_names = len(dep_versions)
        log_lines = self.log_lines
        exe_ids = list(range(1, len(self.exe_weights) + 1))
        last_label: dict[str, str] = {}
        version = _hex40(rng)
        ts = datetime(2024, 1, 8, 9, 0, 0, rng.randrange(1_000_000))
        record_columns = _columns("record")
        ps_id = dk_id = rin_id = rdep_id = rplat_id = ti_id = 0

        # External input files come first: DataKey rows that no record produced.
        rows: dict[str, list[tuple]] = {"datakey": []}
        created = ts - timedelta(days=30)
        for _ in range(n_inputs):
            dk_id += 1
            name, ext, mime = choice(_OUTPUTS[:4])
            size = randint(1_000, 50_000_000)
            mime_json = "null" if mime is None else f'"{mime}"'
            created += timedelta(seconds=randint(1, 600))
            rows["datakey"].append((
                dk_id, f"data/raw/session_{dk_id:04d}/{name}.{ext}", _hex40(rng), _dt(created),
                f'{{"encoding": null, "mimetype": {mime_json}, "size": {size}}}', None,
            ))  # fmt: skip
        yield rows
        first_output = dk_id + 1

        rows = {t: [] for t in _BATCH_ORDER}
        for i in range(self.records):
            rid = i + 1
            plant, plant_len = self.plan.get(i, ("", 0))
            proj = projects[randint(0, len(projects) - 1)] if len(projects) > 1 else projects[0]
            ts += timedelta(seconds=randint(30, 400), microseconds=randint(-400_000, 400_000))
            base_label = f"{ts:%Y%m%d-%H%M%S}_{rng.getrandbits(16):04x}"
            label = base_label
            if plant == "label":
                label = _fit(base_label + "_", "", plant_len, "sweep-of-input-rate-and-weights_")
            main_file = choice(proj["main_files"])
            if plant == "main_file":
                main_file = _fit("src/", "/run.py", plant_len, "deeply/nested/analysis_stage/")
            if rand() < 0.3:
                version = _hex40(rng)

            # Parameter set: mostly new, sometimes re-used (Sumatra's get_or_create dedup).
            if ps_id and rand() < 0.08:
                params_id = randint(1, ps_id)
            else:
                ps_id += 1
                params_id = ps_id
                rows["parameterset"].append((ps_id, *self._parameters()))

            # Tags: 0-3 from the pool; Record.tags is the comma-joined copy.
            tag_ids = [t + 1 for t in sample(range(n_tags), choice((0, 0, 1, 1, 1, 2, 2, 3)))]
            if plant == "record_tags":
                tag_ids = self._planted_tags(plant_len)
            elif plant == "tag_name":
                tag_ids = [self.long_ids[(plant, plant_len)]]
            tag_pool = self.pools["tag"]
            tags = ",".join(tag_pool[t - 1][1] for t in tag_ids)
            for t in tag_ids:
                ti_id += 1
                rows["taggeditem"].append((ti_id, t, content_type, rid))

            mode_idx = 0 if rand() < 0.85 else randint(1, 2)
            datastore = proj["datastore"]
            if plant == "datastore_parameters":
                datastore = self.long_ids[(plant, plant_len)]
            exe = rng.choices(exe_ids, self.exe_weights)[0]
            if plant == "executable_options":
                exe = self.long_ids[(plant, plant_len)]
            duration = rand() * 1000
            # Mostly a few lines; now and then a long log or traceback (the 300 MB budget for
            # 100k records leaves ~0.4 KB of output per record on average).
            n_lines = randint(1, 6) if rand() < 0.95 else randint(30, 50)
            stdout = "\n".join(rng.choices(log_lines, k=n_lines))
            stdout += f"\nRecord {base_label} finished in {duration:.3f} s\n"
            repeats = None
            if proj["id"] in last_label and rand() < 0.02:
                repeats = last_label[proj["id"]]
            last_label[proj["id"]] = base_label
            diff = choice(self.diffs) if rand() < 0.03 else ""
            arguments = f"default.param --seed {randint(0, 99)}"
            record = {  # by name (in the order the random draws are made): the model's
                # column order is not the natural one
                "db_id": rid,
                "label": label,
                "reason": choice(_REASONS),
                "duration": duration,
                "main_file": main_file,
                "version": version,
                "outcome": choice(_OUTCOMES),
                "timestamp": _dt(ts),
                "tags": tags,
                "diff": diff,
                "user": self._user(proj),
                "script_arguments": arguments,
                "stdout_stderr": stdout,
                "repeats": repeats,
                "datastore_id": datastore,
                "executable_id": exe,
                "input_datastore_id": proj["input_datastore"],
                "launch_mode_id": proj["modes"][mode_idx],
                "parameters_id": params_id,
                "project_id": proj["id"],
                "repository_id": proj["repository"],
            }
            rows["record"].append(tuple(record[name] for name in record_columns))

            # Inputs: earlier records' outputs or external files; distinct per record.
            inputs: dict[int, None] = {}
            for _ in range(randint(1, 3)):
                if dk_id >= first_output and rand() < 0.5:
                    inputs[randint(first_output, dk_id)] = None
                else:
                    inputs[randint(1, n_inputs)] = None
            for key in inputs:
                rin_id += 1
                rows["record_input_data"].append((rin_id, rid, key))

            # Outputs: DataKey rows pointing back at the record.
            for k, (name, ext, mime) in enumerate(sample(_OUTPUTS, randint(2, 4))):
                dk_id += 1
                path = f"{base_label}/{name}.{ext}"
                if plant == "datakey_path" and k == 0:
                    path = _fit(f"{base_label}/", f"/{name}.{ext}", plant_len, "stage_output/")
                created = ts + timedelta(seconds=duration * (k + 1) / 4)
                mime_json = "null" if mime is None else f'"{mime}"'
                rows["datakey"].append((
                    dk_id, path, _hex40(rng), _dt(created),
                    f'{{"encoding": null, "mimetype": {mime_json}, '
                    f'"size": {randint(100, 20_000_000)}}}',
                    rid,
                ))  # fmt: skip

            deps = [choice(dep_versions[n]) for n in sample(range(n_dep_names), randint(17, 29))]
            if plant == "dependency_version":
                deps[0] = self.long_ids[(plant, plant_len)]
            for d in deps:
                rdep_id += 1
                rows["record_dependencies"].append((rdep_id, rid, d))

            n_plat = 1 if mode_idx == 0 else randint(2, 4)
            plats = sample(range(1, 13), n_plat)
            if plant == "platform_version":
                plats = [self.long_ids[(plant, plant_len)]]
            for pl in plats:
                rplat_id += 1
                rows["record_platforms"].append((rplat_id, rid, pl))

            if rid % BATCH == 0 or rid == self.records:
                yield rows
                rows = {t: [] for t in _BATCH_ORDER}

    def _user(self, proj: dict) -> str:
        # Mostly the project's owner, sometimes a collaborator.
        return proj["user_line"] if self.rng.random() < 0.9 else self.rng.choice(_USERS)[1]
