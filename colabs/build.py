"""Writes colabs/<world>.ipynb from the cells below, executes each, and stores it with outputs.

  python colabs/build.py                  # every notebook (tracr, pcfg, tinystories, audit)
  python colabs/build.py tracr pcfg       # some of them

The cells here are the notebooks' source: edit them here, rerun this script,
and commit the .ipynb it writes (tests/test_colabs.py checks that the stored
notebooks match these cells, carry outputs, and still run). Execution is on
this machine's CPU at the sizes the tests run; `WRAPPER_STUDY_CACHE` (tracr
exports) is honoured. The repository root is put on the kernel's PYTHONPATH,
so the install cell finds `wrapper_study` and does nothing, as in the tests.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

COLABS = pathlib.Path(__file__).resolve().parent
REPO = COLABS.parent
# One place for the repository URL: the install cell and the README's Colab links use it.
REPO_URL = 'https://github.com/<org>/wrapper_study'

_QUESTION = """\
**The question** (Jain, Kirk, Lubana et al., *Mechanistically analyzing the effects of
fine-tuning on procedurally defined tasks*, ICLR 2024). A pretrained model has a capability;
fine-tuning teaches it another one. Is the old capability deleted, or is it still inside,
with a thin *wrapper* learned on top that routes around it? The paper's evidence for a
wrapper: the old circuit stays visible (attention maps, linear probes), pruning a few units
brings the old capability back, and *reverse fine-tuning* (reFT) on the old task revives it
in far fewer steps than learning it from scratch."""

_ACCELERATOR = """\
**CPU, TPU or GPU.** This notebook runs a CPU-sized version of the study in about a minute,
so its numbers are toy-scale (a few steps, one seed): read them, and the verdicts at the end,
as a demonstration of the pipeline, not as the paper's results. On Colab, *Runtime > Change
runtime type* picks a TPU or GPU; nothing changes in the code (JAX uses the accelerator it
finds). For the paper's scale, use the config's `:paper` variant (`get_config('paper')`
below, or `wrapper-study --config={name}:paper --workdir=...` in a terminal)."""

_INSTALL = f"""\
# Installs wrapper_study (with its `configs` and `launch` packages) when it is not importable,
# e.g. on a fresh Colab runtime; does nothing where it is installed.
REPO_URL = '{REPO_URL}'

try:
  import wrapper_study  # pylint: disable=unused-import
except ImportError:
  import subprocess
  import sys
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', f'git+{{REPO_URL}}'], check=True)
  import wrapper_study  # pylint: disable=unused-import
print('wrapper_study from', wrapper_study.__file__)"""


def _header(title: str, intro: str, config_name: str) -> list[tuple[str, str]]:
  return [('markdown', f'# {title}\n\n{intro}\n\n{_QUESTION}\n\n'
           + _ACCELERATOR.format(name=config_name)),
          ('code', _INSTALL)]


# ----------------------------------------------------------------- Tracr ----

TRACR = _header(
    'wrapper_study: the Tracr world',
    'A transformer whose weights are *compiled* from a RASP program (tracr), so its circuit is '
    'known exactly: the Counter counts the `a` tokens of a string (O_PT). We fine-tune it to '
    'count `b` (O_FT), on data where a fraction C_Tr of samples obeys a spurious correlation '
    '(count(b) = count(a) + 1) that lets the old circuit pass for the new one, then look inside.',
    'tracr_study') + [
        ('code', """\
%matplotlib inline
import tempfile

import jax
import matplotlib.pyplot as plt
import numpy as np
import treescope
from IPython.display import Markdown, display

from configs import tracr_study as tracr_config
from wrapper_study import metrics
from wrapper_study import population
from wrapper_study.analysis import pruning
from wrapper_study.experiments import tracr_study
from wrapper_study.report import plots
from wrapper_study.report import tables
from wrapper_study.tracr import analysis
from wrapper_study.tracr import claims
from wrapper_study.tracr import report
from wrapper_study.tracr import train

# On a CPU these tiny runs cost mostly XLA compile time; skip its slow optimizations there.
if jax.default_backend() == 'cpu':
  jax.config.update('jax_disable_most_optimizations', True)
plt.rcParams['figure.dpi'] = 60  # Small inline figures.
print('JAX', jax.__version__, 'on', jax.devices())"""),
        ('markdown', """\
## The config

`get_config('')` is the reduced study (the whole Table 3 grid, both tasks, ~9 min on 2 CPU
cores); `get_config('paper')` is the paper's scale. Here: the tests' `smoke` config, cut to
the Counter, one seed and a 3 x 3 grid of learning rates x C_Tr, so it runs in about a minute.
`validate` runs every check that needs no compute."""),
        ('code', """\
config = tracr_config.get_config('smoke')
config.tasks = ('counter',)
config.finetune.lrs = (1e-1, 1e-2, 1e-3)  # eta_L, eta_M, eta_S.
config.finetune.c_trs = (0.0, 0.5, 1.0)
config.finetune.seeds = (0,)
config.finetune.steps = 60
config.finetune.warmup_steps = 10
config.finetune.num_evals = 3
config.finetune.save_every = config.finetune.log_every = 30
config.pruning.granularities = ('weight',)  # The paper prunes weights in the Tracr world.
config.reft.source_lrs = (1e-1,)
config.reft.lrs = (1e-2,)
config.reft.scratch_lrs = (1e-2,)
config.reft.steps = 20
config.reft.warmup_steps = 4
tracr_study.validate(config)

workdir = tables.make_workdir(tempfile.mkdtemp())
writer = metrics.MetricWriter(workdir)  # TensorBoard events + metrics.csv, as the binary writes.
print(workdir)"""),
        ('markdown', """\
## 1. Compile the Counter and load it into Flax

tracr compiles the RASP program (cached on disk after the first time); `compile_pair` also
compiles the program for O_FT, the start of the Scr.+FT baseline. The parameters are a plain
dict in the shared Flax transformer; treescope summarises every array (in a notebook,
`treescope.show(tm.params)` gives the interactive view). The compiled model is exact: 100%
on O_PT."""),
        ('code', """\
spec = tracr_study.task_spec(config, 'counter')
tm, ft_tm = train.compile_pair(spec, config.cache_dir)
print(tm.config)
print(treescope.render_to_text(tm.params))

data = train.TaskData(spec, tm)
test_sets = train.make_test_sets(data, config.eval.num_samples, config.seed)
compiled_row, _ = analysis.compiled_row(data, test_sets)
display(Markdown(tables.markdown_table([compiled_row])))"""),
        ('markdown', """\
## 2. Fine-tune the grid (one vmapped jit)

Every (lr, C_Tr, seed) member starts from the compiled weights plus N(0, 0.001) noise (the study's
default calibrates that level: see its report's calibration section) and is
trained on O_FT, all members in one jitted step. Table 3's layout: accuracy on O_PT and O_FT,
on test sets where the correlation holds (C_Te=1) and where it never does (C_Te=0). A model
that only learned the wrapper still answers O_PT where the correlation is broken."""),
        ('code', """\
members, params_P, history = train.finetune_grid(config, data, test_sets, workdir, writer)
finite = population.finite_members(params_P)
final = {m: history.curve(m)[1][-1] for m in report.METRICS + report.NATURAL_METRICS}
member_rows = analysis.member_rows(config, data, members, params_P, history, test_sets, finite)
distinct = [r['n_distinct'] for r in member_rows if r['kind'] == 'fine-tuned']
table3 = report.table3_rows(config, 'counter', members, final, finite, distinct)
display(Markdown(report.table3_markdown(table3)))
report.finetune_figure('counter', members, history, finite);"""),
        ('markdown', """\
## 3. Attention maps

Activations are read by their TransformerLens-style hook names (`model.hook_names(config)`
lists them). Compiled vs fine-tuned attention per block, at the largest lr (the paper's
Figs 10, 40-45; `maps.map_figures` draws every lr and C_Tr): if the block that attends to
`a` keeps its pattern, the counting circuit is still there."""),
        ('code', """\
inputs = test_sets['c_te0'].inputs[:1]
names = [f'blocks.{l}.attn.hook_pattern' for l in range(tm.config.n_layers)]
shown = [('compiled', tm.params)] + [
    (f'fine-tuned lr={m.lr:g} C_Tr={m.c_tr:g}', population.member_params(params_P, i))
    for i, m in enumerate(members) if m.lr == max(config.finetune.lrs) and m.c_tr in (0.0, 1.0)]
acts = [analysis.activations(tm, params, inputs, names) for _, params in shown]
patterns = np.stack([np.stack([a[n][0, 0] for n in names]) for a in acts])  # [models, blocks, T, T]
labels = analysis.token_labels(tm, inputs)[0]
plots.attention_maps(patterns, [labels] * len(shown), [title for title, _ in shown],
                     title='Counter: attention per block (head 0)');"""),
        ('markdown', """\
## 4. Pruning

Rank the weights by grad x weight of the O_PT loss and remove the top K. If removing one or a
few weights restores Acc O_PT, fine-tuning added a small wrapper on a circuit that survived.
The controls are the C_Tr=0 models and the noised, never fine-tuned one."""),
        ('code', """\
units = {g: pruning.make_units(tm.params, g) for g in config.pruning.granularities}
curves, top, pruned, n_main, pfinite = analysis.prune_population(
    config, data, members, params_P, test_sets, units)
prune_rows = report.pruning_rows(config, 'counter', pruned, curves, top, n_main, pfinite)
prune_members = report.pruning_member_rows('counter', pruned, curves, pfinite)
display(Markdown(tables.markdown_table(prune_rows)))
report.pruning_figure(config, 'counter', 'weight', pruned, curves['weight'], pfinite);"""),
        ('markdown', """\
## 5. Reverse fine-tuning

Train the fine-tuned models back on O_PT at a smaller lr, beside Scr.+FT (the program
compiled for O_FT, trained on O_PT): a wrapped capability revives in a few steps, a deleted
one has to be learned like Scr.+FT does."""),
        ('code', """\
reft_members, reft_history, rfinite = train.reft_population(
    config, data, ft_tm, members, params_P, test_sets, workdir, writer)
threshold = config.reft.revival_threshold
reft_rows = report.reft_rows('counter', reft_members, reft_history, threshold, rfinite)
reft_member_rows = report.reft_member_rows('counter', reft_members, reft_history, threshold,
                                           rfinite)
display(Markdown(tables.markdown_table(reft_rows)))"""),
        ('markdown', """\
## 6. The paper's claims, judged

Each claim has a manipulation check (did fine-tuning change what the claim is about?), a
matched control and a 95% interval over seeds. With one seed and 60 steps these verdicts
demonstrate the machinery; `get_config('')` (5 seeds, 500 steps) is the reduced study."""),
        ('code', """\
evidence = claims.Evidence(member_rows, prune_members, reft_member_rows, config.reft.steps,
                           threshold)
judged, _ = claims.claims('counter', spec.impl.paper_claims, evidence)
display(Markdown(tables.markdown_table(
    judged, ['claim_id', 'statement', 'value', 'control_value', 'verdict'])))
writer.close()"""),
        ('markdown', """\
Acc O_PT during reverse fine-tuning: the fine-tuned models (left from the compiled Counter)
against Scr.+FT. The dotted line is the revival threshold."""),
        ('code', """\
report.reft_figure('counter', reft_members, reft_history, rfinite, threshold);"""),
    ]

# ------------------------------------------------------------------ PCFG ----

PCFG = _header(
    'wrapper_study: the PCFG world',
    'A small GPT pretrained on strings from a probabilistic grammar (the paper\'s Fig. 14), '
    'with five task families; one of them, the Counter, counts `a` (O_PT). Fine-tuning '
    'teaches it to count `b` (O_FT) on data where a fraction C_Tr obeys a spurious '
    'correlation between the two counts. Then: probes, pruning and reverse fine-tuning.',
    'pcfg_analysis') + [
        ('code', """\
%matplotlib inline
import tempfile

import jax
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from configs import pcfg_analysis as pcfg_config
from wrapper_study import metrics
from wrapper_study.experiments import pcfg_analysis
from wrapper_study.pcfg import analysis
from wrapper_study.pcfg import claims
from wrapper_study.pcfg import model as pcfg_model
from wrapper_study.pcfg import report
from wrapper_study.pcfg import train
from wrapper_study.report import tables

# On a CPU these tiny runs cost mostly XLA compile time; skip its slow optimizations there.
if jax.default_backend() == 'cpu':
  jax.config.update('jax_disable_most_optimizations', True)
plt.rcParams['figure.dpi'] = 60  # Small inline figures.
print('JAX', jax.__version__, 'on', jax.devices())"""),
        ('markdown', """\
## The config

`get_config('cpu')` is the CPU study (~9 min on 2 cores), `get_config('paper')` App. C's
scale. Here: the tests' `smoke` config (a 1-layer, 16-wide model, one operand prior, a few
steps per phase, a 2 x 2 grid of lrs x C_Tr), with one seed. A few steps teach the model
nothing: this shows the pipeline and where each result lands, not the paper's numbers
(the `cpu` config pretrains 8000 steps)."""),
        ('code', """\
config = pcfg_config.get_config('smoke')
config.finetune.seeds = (0,)
config.pretrain.keep_steps = (config.pretrain.steps,)
config.pretrain.eval_every = config.pretrain.save_every = config.pretrain.steps
config.analysis.probe_method = 'closed_form'  # Ridge probes in seconds; 'adamw' is the paper's.
config.analysis.member_chunk = 8  # All 8 fine-tuned models in one vmapped scoring pass.
pcfg_analysis.validate(config)

workdir = tables.make_workdir(tempfile.mkdtemp())
writer = metrics.MetricWriter(workdir)  # TensorBoard events + metrics.csv, as the binary writes.
times = metrics.PhaseTimes(workdir, 'timing_notebook')
prior = config.pretrain.priors[0]
prior_name, pt_step = pcfg_model.prior_name(prior), config.pretrain.steps
print(workdir, '| prior:', prior_name, prior)"""),
        ('markdown', """\
## 1. Pretrain

Next-token loss on text from the grammar, with every task family's questions and answers;
the accuracies are on the answers of each family."""),
        ('code', """\
pre_acc = train.pretrain(config, prior, workdir, writer)
pre_params = train.load_pretrained(config, prior, pt_step, workdir)
print({k: round(v, 1) for k, v in pre_acc.items()})"""),
        ('markdown', """\
## 2. Fine-tune the grid (one vmapped jit)

Every (lr, C_Tr, seed) member starts from the pretrained model and learns to count `b`.
The curves: accuracy on the fine-tuning task (O_FT) and on the pretraining one (O_PT)."""),
        ('code', """\
arm = train.arms(config)[0]  # Plain fine-tuning (the 'main' variant).
pop = f'finetune_{pcfg_model.pretrain_name(config, prior)}_{pt_step}'
members, history, params_P = train.finetune(
    train.arm_config(config, arm), prior, pt_step, pre_params, workdir, writer, name=pop,
    extra_pt_families=pcfg_model.jailbreak_families(config))
results = {(prior_name, arm): dict(members=members, history=history, params_P=params_P,
                                   pre_acc=tuple(pre_acc.values()))}
report.accuracy_figure(config, results, 'ft');"""),
        ('markdown', """\
## 3. Probes, pruning, weight change

`analysis.analyse` fits a linear probe for the count of `a` (O_PT) and of `b` (O_FT) at
every block of every model in one vmapped call, prunes neurons by grad x weight of the
count-`a` loss (and with a learned mask), and measures how far each matrix moved. If the
count of `a` is still linearly readable after fine-tuning, the capability is still inside."""),
        ('code', """\
results[(prior_name, arm)].update(
    analysis.analyse(config, pop, pre_params, params_P, workdir, times, f'{prior_name}/ft'))
display(Markdown(tables.markdown_table(report.probe_rows(config, results))))
report.probes_figure(config, results);"""),
        ('code', """\
report.pruning_figure(config, results, config.analysis.k_max);"""),
        ('markdown', """\
## 4. Reverse fine-tuning

The models fine-tuned at the largest lr are trained back on counting `a`, beside Scr.+FT
(pretrained with the prior mirrored towards `b`, then trained to count `a`) and Scr.
(random init)."""),
        ('code', """\
scr_prior = tuple(config.analysis.scr_ft_prior)
train.pretrain(config, scr_prior, workdir, writer, prior_index=len(config.pretrain.priors))
scr_params = train.load_pretrained(config, scr_prior, pt_step, workdir)
sources = {f'{p}/{a.name}': (r['members'], r['params_P']) for (p, a), r in results.items()}
reft_out = train.reft(config, sources, scr_params, workdir, writer)
display(Markdown(tables.markdown_table(report.reft_rows(config, *reft_out))))"""),
        ('markdown', """\
## 5. The paper's claims, judged

P1 wrapper, P2 pruning, P3 probing, P4 reFT: each with a manipulation check, a matched
control and a 95% interval over seeds. After a few pretraining steps the model has no
capability to keep, so the checks say `not measured`."""),
        ('code', """\
found = claims.analysis(config, results, reft_out)
display(Markdown(tables.markdown_table(
    found, ['claim_id', 'statement', 'value', 'control_value', 'verdict'])))
writer.close()"""),
        ('markdown', 'Acc O_PT during reverse fine-tuning, against Scr.+FT and Scr.:'),
        ('code', """\
report.reft_figure(config, *reft_out);"""),
    ]

# ----------------------------------------------------------- TinyStories ----

TINYSTORIES = _header(
    'wrapper_study: the TinyStories world',
    'A small LLaMA-style language model pretrained on TinyStories-Instruct stories, some with '
    'a *Twist* feature. Fine-tuning tries to delete Twist (protocols F, F+MM, F+RR); '
    'generations are scored by a local classifier, probes look for Twist at every block, and '
    'reverse fine-tuning on Twist stories asks whether it comes back faster than for a model '
    'that never saw it (Not-in-PT). Here on the small synthetic stand-in data set that ships '
    'with the package (nothing downloads); for the real data see `configs/tinystories_study.py`.',
    'tinystories_study') + [
        ('code', """\
%matplotlib inline
import tempfile

import jax
import matplotlib.pyplot as plt
from IPython.display import Image, Markdown, display

from configs import tinystories_study as ts_config
from wrapper_study import metrics
from wrapper_study import train as train_lib
from wrapper_study.experiments import tinystories_study
from wrapper_study.report import plots
from wrapper_study.report import tables
from wrapper_study.tinystories import analysis
from wrapper_study.tinystories import claims
from wrapper_study.tinystories import data
from wrapper_study.tinystories import evaluate
from wrapper_study.tinystories import report
from wrapper_study.tinystories import train
from wrapper_study.tinystories.paper import NOT_IN_PT, PRESENT

# On a CPU these tiny runs cost mostly XLA compile time; skip its slow optimizations there.
if jax.default_backend() == 'cpu':
  jax.config.update('jax_disable_most_optimizations', True)
plt.rcParams['figure.dpi'] = 60  # Small inline figures.
print('JAX', jax.__version__, 'on', jax.devices())"""),
        ('markdown', """\
## The config

`get_config('cpu')` is the CPU study on synthetic data (3 replicates, ~16 min), `get_config('paper')`
the 91M model on the official files (`config.data.path`). Here: the tests' `smoke` config
(a 1-layer, 32-wide model, a few steps per phase)."""),
        ('code', """\
config = ts_config.get_config('smoke')
tinystories_study.validate(config)

workdir = tables.make_workdir(tempfile.mkdtemp())
timing = metrics.PhaseTimes(workdir)
writer = metrics.MetricWriter(str(workdir))  # TensorBoard events + metrics.csv.
print(workdir)"""),
        ('markdown', """\
## 1. Data, tokenizer, classifier

Stories (synthetic here) are split into pretraining, fine-tuning and test shards; a
SentencePiece tokenizer is trained on them; a local classifier learns to tell Twist stories,
so generations can be scored without a large model."""),
        ('code', """\
world = data.prepare(config, workdir, timing)
evaluate.fit_classifier(config, workdir, world)
example = next(e for e in world.splits.pretrain if world.feature in e.features)
print(f'{len(world.splits.pretrain)} pretraining stories; one with {world.feature}:')
print(example.features, example.story[:400])
print('classifier:', world.clf_scores)"""),
        ('markdown', """\
## 2. Pretrain, delete Twist, reverse fine-tune

*Present* is pretrained with Twist stories, *Not-in-PT* without. Present is then fine-tuned
to delete Twist with each protocol and lr; every deleted model and Not-in-PT are then
reverse fine-tuned on Twist stories."""),
        ('code', """\
seed, = config.model_seeds  # The smoke config has one replicate (the CPU study: 3).
ctx = train.Context(config=config, world=world, evaluate=evaluate.Evaluator(config, world, seed),
                    workdir=workdir, writer=writer, mesh=train_lib.data_mesh(), timing=timing,
                    seed=seed)
logs, finals = {}, {}
train.pretrain(ctx, finals, logs)
train.delete(ctx, finals, logs)
train.reverse_finetune(ctx, finals, logs)
rows = report.table1_rows(config, logs)
display(Markdown(report.table1_markdown(config, rows)))"""),
        ('markdown', """\
## 3. Probes

A linear probe per feature (Twist and the others) on the mean of the last story positions,
at every block of every model, fitted in one vmapped call. If Twist stays linearly readable
after deletion, deletion only wrapped it."""),
        ('code', """\
probed = [PRESENT, NOT_IN_PT] + train.reft_models(config)[:-1]
probes = analysis.probe_accuracies(config, world, {m: finals[m] for m in probed}, workdir)
display(Markdown(report.probe_table(config, probes, world)))"""),
        ('markdown', """\
## 4. The paper's claims, judged, and the figures

Each claim has a manipulation check, a matched control and an interval; after a few
pretraining steps the model has not learned Twist, so most checks say `not measured`. `report.figures` writes the study's figures (Twist-story loss during
deletion and reFT, twist fraction, probes)."""),
        ('code', """\
# One list entry per replicate; with several, each value gets a t-interval over them.
found = claims.claims(config, [logs], [probes], world.clf_scores, claims.probe_info(world))
display(Markdown(tables.markdown_table(found, ['claim_id', 'statement', 'value', 'verdict'])))
report.figures(config, logs, probes, workdir)
writer.close()
display(Image(filename=str(workdir / 'figures' / 'reft_twist_loss.png')))"""),
        ('markdown', 'Probe accuracy for Twist at each block (B0 = embeddings), per model:'),
        ('code', """\
sites = list(range(config.model.n_layers + 1))
plots.curves(sites, {m: probes[m][world.feature] for m in probes}, 'block (B0 = embeddings)',
             f'{world.feature} probe accuracy (%)', f'{world.feature} probe per block');"""),
    ]


# ----------------------------------------------------------------- Audit ----

AUDIT = [
    ('markdown', """\
# wrapper_study: audit your own pair

Your model was fine-tuned, and a capability it had (O_PT) seems gone. Deleted, or *wrapped*?
`wrapper-study audit` answers with the paper's instruments on any pretrained / fine-tuned pair
of checkpoints (Hugging Face GPT-2 or LLaMA-family directories, or the project's own): accuracy
on O_PT and O_FT, linear probes on every block, grad x weight pruning against random pruning,
reverse fine-tuning against a control that never had O_PT, weight change, and verdicts with
their checks, controls and intervals.

This notebook makes a small pair itself (a model pretrained to copy the first token of a
prompt, then fine-tuned on the same prompts to copy the last), saves both as Hugging Face
directories, writes the capability spec, and audits them as you would your own, in about a
minute on a CPU.

""" + _QUESTION),
    ('code', _INSTALL),
    ('code', """\
%matplotlib inline
import json
import pathlib
import subprocess
import sys
import tempfile

import jax
import numpy as np
from IPython.display import Image, Markdown, display

from wrapper_study import model
from wrapper_study.audit import revive, spec
from wrapper_study.hf import export
from wrapper_study.report import tables

root = pathlib.Path(tempfile.mkdtemp(prefix='audit_'))
print('the pair, its spec and the audit go to', root)"""),
    ('markdown', """\
## 1. A pair to audit

Prompts are a task token (1) and six symbols (2..11). O_PT: answer the first symbol; O_FT:
answer the last. Pretrain on O_PT, fine-tune briefly on O_FT (same prompts, other answer)."""),
    ('code', """\
rng = np.random.default_rng(0)
def rows(n, pick):
  xs = rng.integers(2, 12, (n, 6))
  return [{'prompt': [1] + x.tolist(), 'answer': [int(x[pick])]} for x in xs]
o_pt_rows, o_ft_rows = rows(512, 0), rows(512, -1)
as_set = lambda rs: spec.token_set([r['prompt'] for r in rs], [r['answer'] for r in rs])

cfg = model.TransformerConfig(vocab_size=12, max_len=8, d_model=32, n_layers=2, n_heads=4,
                              d_head=8, d_mlp=64, activation='gelu', layer_norm=True, causal=True)
one = lambda p: jax.tree.map(lambda x: x[None], p)  # A population of one member.
pre_P, _ = revive.train(cfg, one(model.init_params(cfg, jax.random.PRNGKey(0))), [0],
                        as_set(o_pt_rows), steps=300, lr=3e-3, batch_size=64, salt=1)
ft_P, _ = revive.train(cfg, pre_P, [0], as_set(o_ft_rows), steps=100, lr=1e-3, batch_size=64,
                       salt=2)
for name, p in (('pretrained', pre_P), ('finetuned', ft_P)):
  export.save_pretrained(cfg, jax.tree.map(lambda x: x[0], p), root / name)
print(sorted(str(p.relative_to(root)) for p in root.rglob('*')))"""),
    ('markdown', """\
## 2. The capability spec

One JSON file naming JSONL files of `{"prompt": [token ids], "answer": [token ids]}` rows (the
format is in `wrapper_study/audit/spec.py`; a `file.py:function` returning the sets works too).
Half of each file is held out for every accuracy; without a probe file, the probe target is
the O_PT answer."""),
    ('code', """\
for name, rs in (('o_pt', o_pt_rows), ('o_ft', o_ft_rows)):
  (root / f'{name}.jsonl').write_text('\\n'.join(json.dumps(r) for r in rs))
(root / 'spec.json').write_text(json.dumps(
    {'name': 'copy the first token', 'o_pt': 'o_pt.jsonl', 'o_ft': 'o_ft.jsonl'}))
print((root / 'spec.json').read_text()); print((root / 'o_pt.jsonl').read_text()[:120])"""),
    ('markdown', """\
## 3. The audit

In a terminal this is `wrapper-study audit --pretrained=... --finetuned=... --capability=...
--workdir=...`; here the same binary runs from Python. `--config=audit:smoke` is the quick
size, with a longer reFT so revival can show; every field of `configs/audit.py` can be set
with `--config.<field>=...`."""),
    ('code', """\
workdir = root / 'audit'
cmd = [sys.executable, '-m', 'launch.main', 'audit', f'--pretrained={root / "pretrained"}',
       f'--finetuned={root / "finetuned"}', f'--capability={root / "spec.json"}',
       f'--workdir={workdir}', '--config=audit:smoke', '--config.probe.steps=200',
       '--config.reft.steps=40', '--config.reft.eval_every=5', '--config.reft.lr=1e-3',
       '--config.reft.batch_size=32', '--config.reft.control_ft_steps=100']
proc = subprocess.run(cmd, capture_output=True, text=True)
assert proc.returncode == 0, proc.stderr[-3000:]
print(proc.stdout)"""),
    ('markdown', """\
## 4. Verdicts

`tables/claims.csv` (the columns every world writes): each claim with its manipulation check
(did fine-tuning lower Acc O_PT?), control and 95% interval; the overall reading last, never
stronger than the claims under it. report.md says what each verdict means."""),
    ('code', """\
found = tables.read_csv(workdir / 'tables' / 'claims.csv')
display(Markdown(tables.markdown_table(found, ['claim_id', 'verdict', 'value', 'ci_low',
                                              'ci_high', 'control_value'])))
display(Markdown(tables.markdown_table(tables.read_csv(workdir / 'tables' / 'accuracy.csv'))))
display(Image(filename=str(workdir / 'figures' / 'probes.png')))
display(Image(filename=str(workdir / 'figures' / 'pruning_neuron.png')))"""),
    ('code', """\
display(Image(filename=str(workdir / 'figures' / 'reft.png')))"""),
]

NOTEBOOKS = {'tracr': TRACR, 'pcfg': PCFG, 'tinystories': TINYSTORIES, 'audit': AUDIT}


def notebook(name: str):
  """The unexecuted notebook of `name` (nbformat v4)."""
  import nbformat  # pylint: disable=g-import-not-at-top  # Only building needs it.
  v4 = nbformat.v4
  nb = v4.new_notebook(cells=[
      v4.new_markdown_cell(src) if kind == 'markdown' else v4.new_code_cell(src)
      for kind, src in NOTEBOOKS[name]])
  nb.metadata.update(
      kernelspec={'name': 'python3', 'display_name': 'Python 3', 'language': 'python'},
      language_info={'name': 'python'}, colab={'provenance': []})
  return nb


def kernel_env() -> None:
  """The repository root on the kernel's PYTHONPATH (the kernel inherits this environment)."""
  paths = [str(REPO)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
  os.environ['PYTHONPATH'] = os.pathsep.join(dict.fromkeys(paths))


def execute(nb, timeout: int = 600):
  """Runs every cell in a fresh python3 kernel (cwd colabs/); raises on the first error."""
  import nbclient  # pylint: disable=g-import-not-at-top
  kernel_env()
  nbclient.NotebookClient(nb, timeout=timeout, kernel_name='python3', record_timing=False,
                          resources={'metadata': {'path': str(COLABS)}}).execute()
  return nb


def main(names) -> None:
  import nbformat  # pylint: disable=g-import-not-at-top
  for name in names or list(NOTEBOOKS):
    t0 = time.time()
    nb = execute(notebook(name))
    path = COLABS / f'{name}.ipynb'
    nbformat.write(nb, path)
    print(f'{path}: executed and stored in {time.time() - t0:.0f} s', flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
