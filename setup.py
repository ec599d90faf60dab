"""wrapper_study: does fine-tuning delete a pretrained capability, or only wrap it?"""

import setuptools

# Two paths, chosen by environment markers:
# - Python 3.11: jax 0.10.x and flax <= 0.12.8 (both newer need 3.12), the
#   bounds every 3.11 install resolves to (README: Versions tested).
# - Python 3.12+ (Colab): lower bounds only, so pip keeps the runtime's
#   preinstalled jax/jaxlib (a TPU runtime pairs jax with its libtpu), flax,
#   optax and orbax instead of replacing them. Measured on 3.12: jax 0.12.0.1,
#   flax 0.12.12, optax 0.2.8, orbax-checkpoint 0.12.8, tracr-pypi 1.0.0.
# tracr-pypi 1.0.0 is upstream tracr HEAD 9ce2b8c, and needs dm-haiku >= 0.0.17
# on current JAX.
_PY311 = '; python_version < "3.12"'
_PY312 = '; python_version >= "3.12"'
INSTALL_REQUIRES = [
    'jax>=0.5,<0.11' + _PY311,
    'jax>=0.5' + _PY312,
    'flax>=0.10,<=0.12.8' + _PY311,
    'flax>=0.10' + _PY312,
    'optax>=0.2.4,<0.3' + _PY311,
    'optax>=0.2.4' + _PY312,
    'orbax-checkpoint>=0.11,<0.13' + _PY311,
    'orbax-checkpoint>=0.11' + _PY312,
    'chex>=0.1.87,<0.2',
    'ml-collections>=1.0,<2',
    'absl-py>=2.1',
    'tensorboard>=2.16,<3',  # Only its event writer/reader; no TensorFlow.
    'tracr-pypi==1.0.0',
    'dm-haiku>=0.0.17,<0.1',
    'numpy>=1.26',
    'matplotlib>=3.8',
    'submitit>=1.5,<2',  # Sweeps on SLURM (launch/sweep.py --backend=submitit).
    'sentencepiece>=0.2,<0.3',  # TinyStories BPE tokenizer (cp311 wheels from 0.2.0).
    # mimalloc as a wheel (cmeel.prefix/lib/libmimalloc.so, manylinux_2_28 x86_64/aarch64): the
    # fast allocator every binary preloads on Linux without root or apt
    # (wrapper_study/allocator.py). Elsewhere nothing is needed (macOS: the system allocator).
    'cmeel-mimalloc>=3.4,<4; sys_platform == "linux" and platform_machine in "x86_64 aarch64"',
]

EXTRAS = {
    'test': [
        'pytest>=8',
        'pytest-xdist>=3.5',
        'wheel>=0.40',  # tests/test_layout.py builds the package (setuptools < 70.1 needs it).
        'nltk>=3.8',  # Independent PCFG parse check in tests.
        'nbformat>=5.9',
        'nbclient>=0.10',
        'ipykernel>=6.29',
    ],
}

setuptools.setup(
    name='wrapper_study',
    version='0.1.0',
    description='Does fine-tuning delete a pretrained capability, or only wrap it? '
                '(Jain et al., ICLR 2024, reproduced in JAX/Flax)',
    # configs/ and launch/ are installed too, so a pip install (Colab) runs a study.
    packages=setuptools.find_packages(
        include=['wrapper_study', 'wrapper_study.*', 'configs', 'configs.*', 'launch']),
    entry_points={'console_scripts': ['wrapper-study = launch.main:run',
                                        'wrapper-study-sweep = launch.sweep:run']},
    python_requires='>=3.11',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
