"""Synthetic Sumatra 0.8.1 SQLite record stores, for benchmarks and tests.

The schema is made by Sumatra's own migrations, so it is exactly what `smt init` creates; the
rows are then bulk-loaded with the plain `sqlite3` module (Django's ORM would take hours for
100k records). Rows are shaped like the ones `DjangoRecordStore.save()` writes: shared rows
(executables, dependencies, launch modes, ...) are deduplicated pools, the tag tables agree
with the denormalised `Record.tags`, and every value reads back through Sumatra's
`to_sumatra()`.

`overlong=True` plants a few values longer than their column's `max_length` (as real stores
hold); `GeneratedStore.planted` says exactly which, so an audit can be checked against it.

    python -m smtmigrate.generate PATH --records N [--seed S] [--overlong] [--projects P]
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

BATCH = 2000  # records per executemany round: keeps memory flat, amortises call overhead


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Pools of names, chosen to look like real stores without being anyone's data.
_PROJECT_NAMES = (
    "cortex-sim",
    "hippocampus-ca1",
    "spike-sorting",
    "climate-downscale",
    "protein-md",
    "lattice-qcd",
    "bayes-decoder",
    "fluid-les",
)
_USERS = (
    ("alice", "Alice Martin <alice.martin@lab.example.org>"),
    ("bruno", "Bruno Keller <b.keller@uni.example.edu>"),
    ("chen", "Chen Wei <chen.wei@inst.example.org>"),
    ("dana", "Dana Okafor <dana@example.com>"),
    ("emil", "Emil Strand <emil.strand@lab.example.org>"),
    ("fatima", "Fatima Haddad <f.haddad@uni.example.edu>"),
)
_PACKAGES = _words(
    "numpy scipy matplotlib pandas h5py tables numexpr sympy networkx scikit-learn joblib "
    "threadpoolctl statsmodels patsy seaborn xarray netCDF4 cftime dask toolz cloudpickle "
    "fsspec zarr numcodecs pyyaml jinja2 markupsafe requests urllib3 idna certifi "
    "charset-normalizer six packaging pyparsing python-dateutil pytz tzdata kiwisolver "
    "cycler fonttools pillow contourpy tqdm click rich pygments docutils lazy-object-proxy "
    "wrapt attrs jsonschema referencing rpds-py numba llvmlite cython mpi4py brian2 neo "
    "quantities elephant nest pynn neuron lfpy nixio pyNN-utils tensorflow keras torch "
    "torchvision jax jaxlib optax flax chex ml-dtypes opt-einsum absl-py protobuf grpcio "
    "typing-extensions filelock sympy-utils mpmath psutil pexpect ptyprocess decorator "
    "parameters sumatra django sqlparse asgiref gitpython gitdb smmap lxml bokeh tornado "
    "ipython traitlets jedi parso prompt-toolkit wcwidth"
)
_LOCAL_MODULES = (
    "models",
    "models.network",
    "models.synapses",
    "analysis",
    "analysis.spectra",
    "analysis.stats",
    "io_utils",
    "plotting",
    "config",
    "preprocessing",
)
_TAG_WORDS = _words(
    "baseline sweep debug final paper figure rerun bugfix cluster laptop gpu cpu long short "
    "pilot ablation control noise lowres highres calibration validation test draft review "
    "reviewer2 thesis poster talk sanity benchmark scaling"
)
_PARAM_NAMES = _words(
    "dt tstop n_exc n_inh w_exc w_inh delay tau_m tau_syn v_rest v_thresh v_reset rate seed "
    "noise_amp learning_rate batch_size n_epochs momentum weight_decay grid_x grid_y "
    "timestep solver tolerance max_iter output_interval temperature pressure"
)
_REASONS = (
    "Check that the network is stable at the new synaptic weights.",
    "Parameter sweep over input rate, see lab notebook p. 42.",
    "Rerun after fixing the off-by-one in the spike counter.",
    "Baseline for the paper figure 3.",
    "Test the new solver tolerance.",
    "Reproduce the result from last week on the cluster.",
    "Longer simulation to see whether the oscillation persists.",
    "",
    "Scaling test: double the number of neurons.",
    "Compare with the published values.",
    "Sanity check after upgrading numpy.",
    "Try a smaller time step.",
)
_OUTCOMES = (
    "",
    "Network stable, firing rates as expected.",
    "Diverged after 200 ms: time step too large?",
    "Matches the published figure within noise.",
    "Oscillation at ~40 Hz persists.",
    "Crashed: out of memory on node.",
    "No significant difference from baseline.",
    "Good. Use for figure.",
)
_OUTPUTS = (
    ("spikes", "h5", "application/x-hdf5"),
    ("vm", "h5", "application/x-hdf5"),
    ("summary", "txt", "text/plain"),
    ("rates", "csv", "text/csv"),
    ("raster", "png", "image/png"),
    ("state", "dat", None),
)
_LOG_TEMPLATES = (
    "INFO:root:Building network with {a} excitatory and {b} inhibitory cells",
    "INFO:root:Connecting populations (p={f:.3f})",
    "INFO:root:Step {a}/{b} t={f:.1f} ms",
    "DEBUG:sim:Integrator converged in {a} iterations (residual {g:.3e})",
    "WARNING:sim:Time step {g:.2e} close to stability limit",
    "epoch {a:4d}  loss={f:.6f}  val_loss={h:.6f}",
    "Writing results to Data/{a}/output_{b}.h5",
    "/usr/lib/python3/dist-packages/numpy/core/fromnumeric.py:{a}: RuntimeWarning: "
    "Mean of empty slice",
    "  return _methods._mean(a, axis=axis, dtype=dtype, out=out, **kwargs)",
    "Elapsed: {f:.2f} s, memory peak {a} MB",
    "mean rate exc={f:.3f} Hz inh={h:.3f} Hz",
)

# Planted over-long values: (kind, exact length). Fixed, so tests can hard-code the truth.
_PLANTS: tuple[tuple[str, int], ...] = (
    ("label", 120),
    ("label", 135),
    ("label", 150),
    ("main_file", 150),
    ("main_file", 175),
    ("main_file", 210),
    ("record_tags", 270),
    ("record_tags", 300),
    ("tag_name", 64),
    ("tag_name", 90),
    ("datakey_path", 220),
    ("datakey_path", 260),
    ("datakey_path", 305),
    ("executable_options", 72),
    ("datastore_parameters", 230),
    ("platform_version", 240),
    ("dependency_version", 48),
    ("dependency_version", 57),
)
_PLANT_COLUMNS = {
    "label": ("django_store_record", "label"),
    "main_file": ("django_store_record", "main_file"),
    "record_tags": ("django_store_record", "tags"),
    "tag_name": ("django_store_tag", "name"),
    "datakey_path": ("django_store_datakey", "path"),
    "executable_options": ("django_store_executable", "options"),
    "datastore_parameters": ("django_store_datastore", "parameters"),
    "platform_version": ("django_store_platforminformation", "version"),
    "dependency_version": ("django_store_dependency", "version"),
}
MIN_RECORDS_OVERLONG = len(_PLANTS)  # each plant goes to its own record

_INSERT = {
    "project": "INSERT INTO django_store_project (id, name, description) VALUES (?, ?, ?)",
    "executable": "INSERT INTO django_store_executable (id, path, name, version, options) "
    "VALUES (?, ?, ?, ?, ?)",
    "repository": "INSERT INTO django_store_repository (id, type, url, upstream) "
    "VALUES (?, ?, ?, ?)",
    "launchmode": "INSERT INTO django_store_launchmode (id, type, parameters) VALUES (?, ?, ?)",
    "datastore": "INSERT INTO django_store_datastore (id, type, parameters) VALUES (?, ?, ?)",
    "platforminformation": "INSERT INTO django_store_platforminformation (id, architecture_bits, "
    "architecture_linkage, machine, network_name, ip_addr, processor, release, system_name, "
    "version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "dependency": "INSERT INTO django_store_dependency (id, name, path, version, diff, source, "
    "module) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "tag": "INSERT INTO django_store_tag (id, name) VALUES (?, ?)",
    "parameterset": "INSERT INTO django_store_parameterset (id, type, content) VALUES (?, ?, ?)",
    "record": "INSERT INTO django_store_record (db_id, label, reason, duration, main_file, "
    "version, outcome, timestamp, tags, diff, user, script_arguments, stdout_stderr, repeats, "
    "datastore_id, executable_id, input_datastore_id, launch_mode_id, parameters_id, "
    "project_id, repository_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
    "?, ?, ?)",
    "datakey": "INSERT INTO django_store_datakey (id, path, digest, creation, metadata, "
    "output_from_record_id) VALUES (?, ?, ?, ?, ?, ?)",
    "record_input_data": "INSERT INTO django_store_record_input_data (id, record_id, datakey_id) "
    "VALUES (?, ?, ?)",
    "record_dependencies": "INSERT INTO django_store_record_dependencies (id, record_id, "
    "dependency_id) VALUES (?, ?, ?)",
    "record_platforms": "INSERT INTO django_store_record_platforms (id, record_id, "
    "platforminformation_id) VALUES (?, ?, ?)",
    "taggeditem": "INSERT INTO django_store_taggeditem (id, object_id, content_type_id, tag_id) "
    "VALUES (?, ?, ?, ?)",
}
# Parents before children within a batch (foreign keys are not enforced, but keep it tidy).
_BATCH_ORDER = (
    "parameterset",
    "record",
    "datakey",
    "record_input_data",
    "record_dependencies",
    "record_platforms",
    "taggeditem",
)


@dataclass
class GeneratedStore:
    """What `generate_store` wrote.

    `rows`: row count per table (every table in the file, read back after the load).
    `planted`: `{(table, column): {"rows": n, "max_length": m}}` for the values planted over
    their column's max_length (empty unless `overlong=True`); nothing else exceeds a limit.
    """

    path: Path
    rows: dict[str, int]
    planted: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    projects: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


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


def ensure_django() -> None:
    """Set Django up with smtmigrate's settings unless the caller already did."""
    from django.apps import apps

    if not apps.ready:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smtmigrate.settings")
        django.setup()


def _create_schema(path: Path) -> None:
    """Let Sumatra's migrations build the schema, exactly as `smt init` would."""
    from django.core.management import call_command

    from smtmigrate.db import register_database, unregister_database

    alias = register_database({"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)})
    try:
        call_command("migrate", database=alias, run_syncdb=True, verbosity=0, interactive=False)
    finally:
        unregister_database(alias)


def _record_content_type(con: sqlite3.Connection) -> int:
    """Id of ('django_store', 'record') in this file; post_migrate normally created it."""
    query = "SELECT id FROM django_content_type WHERE app_label = ? AND model = ?"
    row = con.execute(query, ("django_store", "record")).fetchone()
    if row is None:
        con.execute(
            "INSERT INTO django_content_type (app_label, model) VALUES (?, ?)",
            ("django_store", "record"),
        )
        row = con.execute(query, ("django_store", "record")).fetchone()
    return int(row[0])


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
                rows["taggeditem"].append((ti_id, rid, content_type, t))

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
            rows["record"].append((
                rid, label, choice(_REASONS), duration, main_file, version, choice(_OUTCOMES),
                _dt(ts), tags, diff, self._user(proj), arguments, stdout, repeats, datastore,
                exe, proj["input_datastore"], proj["modes"][mode_idx], params_id, proj["id"],
                proj["repository"],
            ))  # fmt: skip

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


def generate_store(
    path: str | Path,
    records: int,
    *,
    seed: int = 0,
    overlong: bool = False,
    projects: int = 1,
    progress: Callable[[int], None] | None = None,
) -> GeneratedStore:
    """Write a new Sumatra 0.8.1 SQLite store of `records` synthetic records at `path`.

    Same arguments, same file contents (bar the `django_migrations.applied` times).
    `progress`, if given, is called with the number of records written so far.
    Raises FileExistsError rather than touch an existing file.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(errno.EEXIST, "will not overwrite an existing file", str(path))
    started = time.perf_counter()
    builder = _Builder(records, seed, overlong, projects)  # validates before creating anything
    ensure_django()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _create_schema(path)
        con = sqlite3.connect(path, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=OFF")  # a failed load is deleted, not rolled back
            con.execute("PRAGMA synchronous=OFF")
            con.execute("PRAGMA cache_size=-32768")  # 32 MiB keeps the hot index pages cached
            con.execute("BEGIN")
            content_type = _record_content_type(con)
            for table in ("project", "executable", "repository", "launchmode", "datastore",
                          "platforminformation", "dependency"):  # fmt: skip
                con.executemany(_INSERT[table], builder.pools[table])
            done = 0
            for batch in builder.batches(content_type):
                for table, rows in batch.items():
                    if rows:
                        con.executemany(_INSERT[table], rows)
                if "record" in batch:
                    done += len(batch["record"])
                    if progress is not None:
                        progress(done)
            # Last: planting tags over 255 joined characters adds tags while records are made.
            con.executemany(_INSERT["tag"], builder.pools["tag"])
            con.execute("COMMIT")
            con.execute("PRAGMA journal_mode=DELETE")  # what Django/Sumatra leave by default
            tables = [
                name
                for (name,) in con.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            counts = {t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
        finally:
            con.close()
    except BaseException:
        path.unlink(missing_ok=True)  # journal_mode=OFF: a half-written file is worthless
        raise
    return GeneratedStore(
        path=path,
        rows=counts,
        planted=builder.planted,
        projects=[p["id"] for p in builder.projects],
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smtmigrate.generate",
        description="Generate a synthetic Sumatra 0.8.1 SQLite record store.",
    )
    parser.add_argument("path", type=Path, help="new SQLite file (must not exist)")
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overlong", action="store_true", help="plant over-long values")
    parser.add_argument("--projects", type=int, default=1)
    args = parser.parse_args(argv)

    def report(done: int) -> None:
        print(f"\r{done:,}/{args.records:,} records", end="", file=sys.stderr, flush=True)

    try:
        store = generate_store(
            args.path,
            args.records,
            seed=args.seed,
            overlong=args.overlong,
            projects=args.projects,
            progress=report if sys.stderr.isatty() else None,
        )
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if sys.stderr.isatty():
        print(file=sys.stderr)
    width = max(map(len, store.rows))
    for table, count in store.rows.items():
        print(f"{table:<{width}}  {count:>12,}")
    print(f"{'total':<{width}}  {store.total_rows:>12,}")
    for (table, column), info in sorted(store.planted.items()):
        print(f"planted {table}.{column}: {info['rows']} rows, max length {info['max_length']}")
    size = store.path.stat().st_size
    print(f"projects: {', '.join(store.projects)}")
    print(f"file: {store.path} ({size / 2**20:,.1f} MiB)")
    print(f"elapsed: {store.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
