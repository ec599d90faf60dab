"""wrapper_study: does fine-tuning delete a pretrained capability, or only wrap it?"""

import setuptools

# Python 3.11 caps jax at 0.10.x and flax at 0.12.8 (both newer need 3.12);
# tracr-pypi 1.0.0 is upstream tracr HEAD 9ce2b8c, and needs dm-haiku >= 0.0.17
# on current JAX.
INSTALL_REQUIRES = [
    'jax>=0.5,<0.11',
    'flax>=0.10,<=0.12.8',
    'optax>=0.2.4,<0.3',
    'orbax-checkpoint>=0.11,<0.13',
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
