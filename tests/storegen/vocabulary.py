"""Pools of names and the planted over-long values of synthetic stores.

Chosen to look like real stores without being anyone's data; fixed, so that tests can
hard-code what a generated store holds.
"""

from __future__ import annotations


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
