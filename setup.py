"""Installs cajax (the core) and cajax_kernels (kernels/cajax_kernels/).

The kernels are installed as `cajax_kernels`, never as a bare `kernels`, which
a widely used PyPI distribution already owns (transformers depends on it).
`kernels/` is the kernels' own distribution root (`pip install ./kernels`)
and holds no `__init__.py`, so the repository root on `sys.path` never
shadows that distribution. experiments/ is not installed: its modules run
from the repository root (`python -m experiments.train`).
"""

import setuptools

setuptools.setup(
    name="cajax",
    version="0.1.0",
    description=(
        "Credit assignment for RL of LLMs in JAX: estimators, losses and "
        "fused log-prob kernels."
    ),
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["cajax", "cajax.*"])
    + ["cajax_kernels"],
    package_dir={"cajax_kernels": "kernels/cajax_kernels"},
    install_requires=["jax>=0.10,<0.12", "numpy>=1.26"],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-xdist>=3",
            "hypothesis>=6.100",
            "absl-py>=2",
            "scipy>=1.11",
            # The reference model for checkpoint-parity tests (CPU build).
            "torch==2.13.0",
            "transformers>=4.50,<6",
        ],
        "experiments": [
            "absl-py>=2",
            "flax>=0.12,<0.13",
            "optax>=0.2.5,<0.3",
            "orbax-checkpoint>=0.12,<0.13",
            "ml-collections>=1.0",
            "tensorboardX>=2.6",
            # The viewer for the event files the loop writes.
            "tensorboard>=2.16",
            "matplotlib>=3.8",
            "scipy>=1.11",
            "tqdm>=4.66",
            "safetensors>=0.4",
            "tokenizers>=0.19",
            "jinja2>=3.1",
        ],
        "gpu": ["jax[cuda12]>=0.10,<0.12"],
        # The systems `python -m experiments.bench_peers` compares with, at
        # the versions its table was measured with (they resolve with the
        # pins above; PyTorch is the CPU build).
        "peers": ["google-tunix==0.1.7", "trl==1.16.0", "torch==2.13.0"],
    },
)
