r"""Audit your own pair: is a capability deleted by fine-tuning, or wrapped?

  wrapper-study audit --pretrained=DIR --finetuned=DIR --capability=spec.json --workdir=runs/a
  wrapper-study --config=audit --config.pretrained=DIR --config.finetuned=DIR \
      --config.capability=spec.json --workdir=runs/a                  # the same, as overrides

DIR: a Hugging Face directory (config.json + *.safetensors; GPT-2 or LLaMA
family) or one written by `wrapper_study.audit.models.save_native`. The
capability spec: `wrapper_study/audit/spec.py` (JSONL prompts and answers, or
`file.py:function`). Phases (`wrapper_study/experiments/audit.py`): accuracy and
loss on O_PT / O_FT of both models; probes on every block of both; pruning of
the fine-tuned model (weights and neurons, K sweep) against K random units and
the pretrained model; reverse fine-tuning beside a matched control; weight
change; report.md, figures, tables/claims.csv and TensorBoard runs.

Choices where the paper is silent, with reasons:
- reFT control: a fresh init of the same architecture fine-tuned on O_FT
  (the paper's Scr.+FT at an auditor's scale; Scr. without O_FT data): the one
  model guaranteed to lack O_PT without the pretraining data (revive.py).
- Probes: the PCFG analysis' protocol (AdamW, lr 1e-3, x0.1 at 1/2, 3/4, 7/8
  of the steps), 1000 steps instead of 4000 (a check of decodability, not a
  tuned probe), three seeds for an interval.
- Pruning: every linear layer inside the blocks ('blocks'); neuron K sweep as
  the PCFG analysis (0..15, then every 5 to 100), weights 0..15 then every 50 to
  1000; three random draws for the control's interval.
- Thresholds, fixed before any run: fine-tuning must lower Acc O_PT by >= 10
  points; decodable within 10 points of the pretrained probe; pruning gains
  >= 10 points over random; revival = 90% of the pretrained Acc O_PT, reached at
  least 25% of the reFT budget sooner than the control.

get_config('smoke') is the test size (few steps, one chunk).
"""

import ml_collections


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """arg: '' (default) or 'smoke' (tests, notebooks)."""
  if arg not in ('', 'smoke'):
    raise ValueError(f"configs/audit.py: unknown config argument {arg!r}; valid: '', 'smoke'.")
  c = ml_collections.ConfigDict()
  c.experiment = 'audit'
  c.pretrained = ''  # Model directory (HF layout or save_native).
  c.finetuned = ''
  c.capability = ''  # spec.json or path/file.py:function.
  c.seed = 0  # The random-unit draws of the pruning control.
  c.inputs_digest = ''  # Set by the experiment's validate(): the input files' digest (reruns).
  c.eval = ml_collections.ConfigDict(dict(
      chunk=64,  # Rows per forward (bounds logits memory: rows x T x vocabulary).
      batch_size=500,  # Rows per forward when collecting probe features.
  ))
  c.probe = ml_collections.ConfigDict(dict(
      enabled=True,
      method='adamw',  # 'adamw' (the paper's protocol) or 'closed_form' (ridge).
      steps=1000,
      lr=1e-3,
      seeds=(0, 1, 2),  # Each seed orders the probes' minibatches: the interval's seeds.
  ))
  c.pruning = ml_collections.ConfigDict(dict(
      granularities=('weight', 'neuron'),
      eligible='blocks',  # 'blocks', 'attn', 'mlp', 'mlp_hidden' (analysis/pruning.py).
      neuron_ks=(),  # Explicit K values; () = 0..15 then every neuron_k_step to neuron_k_max.
      neuron_k_max=100,
      neuron_k_step=5,
      weight_ks=(),
      weight_k_max=1000,
      weight_k_step=50,
      random_draws=3,  # Random-unit control draws (the interval of the pruning claims).
      chunk_size=1,  # Masks evaluated at once per device (1: fastest on CPU).
  ))
  c.reft = ml_collections.ConfigDict(dict(
      enabled=True,
      seeds=(0, 1, 2),
      steps=200,
      lr=1e-4,
      batch_size=32,
      eval_every=20,
      control_ft_steps=200,  # The control's O_FT fine-tuning (0: none, Scr.).
      control_ft_lr=1e-3,
  ))
  c.verdicts = ml_collections.ConfigDict(dict(
      min_drop=10.0,  # Manipulation check: fine-tuning lowered Acc O_PT by >= this (points).
      probe_margin=10.0,  # Decodable: fine-tuned best-block probe >= pretrained's - margin.
      prune_min_gain=10.0,  # Pruning: top-K beats random K by >= this (points).
      revival_fraction=0.9,  # Revived: Acc O_PT >= this x the pretrained model's.
      reft_min_speedup=0.25,  # reFT: revives this fraction of the budget sooner than control.
  ))
  if arg == 'smoke':
    c.probe.steps = 20
    c.probe.seeds = (0, 1)
    c.pruning.neuron_k_max = 6
    c.pruning.neuron_k_step = 3
    c.pruning.weight_k_max = 20
    c.pruning.weight_k_step = 10
    c.pruning.random_draws = 2
    c.reft.seeds = (0, 1)
    c.reft.steps = 6
    c.reft.eval_every = 2
    c.reft.batch_size = 8
    c.reft.control_ft_steps = 4
  return c
