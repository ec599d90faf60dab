r"""Is the pretrained capability still inside? The wrapper analysis of PCFG models.

Paper Figs 5-9 and App. E (18-30): pretrain per prior, fine-tune the
lr x C_Tr x seed grid, then probe every block, prune neurons (grad x weight and
a learned mask), measure where the weights moved, and reverse fine-tune against
the Scr.+FT and Scr. baselines; a report checks claims P1-P4 one by one.

One command per figure group, at CPU scale (default; NOT the paper's numbers):
  python launch/main.py --config=configs/pcfg_analysis.py --workdir=runs/pcfg_analysis
      Figs 5, 6, 7, 79-89, 8, 90-98, 9, 26 (+ learned mask, weight change)
  python launch/main.py --config=configs/pcfg_analysis.py:cpu,mixing --workdir=runs/pcfg_analysis
      Figs 18-23 (PT+FT data mixing, App. E.1)
  python launch/main.py --config=configs/pcfg_analysis.py:cpu,jailbreak --workdir=runs/pcfg_analysis
      Figs 24-25 (jailbreak family tokens, App. E.2)
  python launch/main.py --config=configs/pcfg_analysis.py:cpu,randft --workdir=runs/pcfg_analysis
      Figs 28-30 (randFT, App. E.4)
and the same with `paper` instead of `cpu` at paper scale (for a GPU). Variants
sharing a workdir reuse its pretrained models (pretraining is resumable).

CPU scale is configs/pcfg_study.py's (2 x 64 model, 50-token windows, 8000
pretraining and 500 fine-tuning iterations) with fine-tuning evaluated at 7
points for the curves; reFT runs as long as fine-tuning (500, the paper 10K),
so the paper's iteration counts scale by 1/20 (the paper's "0.1-1K" is 5-50
here, "3K" is 150, Scr.+FT's "4.5K" is 225). Every claim threshold is a named
constant of wrapper_study/pcfg/paper.py; the code is in wrapper_study/pcfg/
(train.py, analysis.py, claims.py, report.py).

Choices where the paper is silent, with reasons:
- Probe sites B0 = the embeddings (token + position), B1..BL = each block's
  residual output, read at the position whose output is the answer (the ART
  token); probe inputs are fine-tuning prompts (count b) on C_Te = 0 windows,
  targets the count of a (O_PT) and of b (O_FT); the probe's classes are the
  number tokens (the paper's vocabulary-sized output restricted to answers).
  Probes are trained on 2000 samples and scored on 500 held-out ones.
- Pruning units: neurons of every linear layer inside the blocks (attention
  q/k/v/out and MLP fc_in/fc_out; a neuron is an output unit with its bias),
  the paper's "a row in the weight matrix" read literally; `pruning.matrices`
  = 'mlp' or 'mlp_hidden' restricts it. Scores use 512 count-a prompts on
  C_Te = 0 windows (a set separate from the test sets).
- Scr.+FT: pretrained with the mirror of the low prior, (a, b, c) = (0.001,
  0.999, 0) (CPU scale: (0.003, 0.997, 0), the mirror of its low prior): the
  same pretraining with b in a's place, "pretrained to count
  O_FT"; Scr.: the same architecture from random init. Both are trained to
  count a at the reFT learning rates.
- reFT data: count-a prompts on fresh windows (the pretraining distribution
  restricted to the capability), answer-only loss, the fine-tuning optimizer
  (AdamW, 20% warmup, cosine) at lr eta_M and eta_S (paper 1e-5, 1e-6; at CPU scale
  the calibrated ones), starting from the models fine-tuned at eta_L with C_Tr in
  {0, 1} (paper Figs 9, 76).
- Revived = Acc O_PT (C_Te = 0) >= 90% at an evaluation; iterations to revival
  are the first such evaluation.
- Learned mask (beyond the paper): keep_u = sigmoid(logit_u) per neuron,
  Adam on the count-a loss + sparsity * (number of removed units), on the
  first 64 of the scoring prompts for 100 steps (CPU; 512 and 300 at paper
  scale), lr 0.1, penalty 0.01 nats per removed unit; units ranked by keep
  probability. Its cost is mask_steps backward passes per model: 300 steps on
  512 prompts cost ~19 fine-tuning runs on CPU, so the CPU scale keeps it near
  one.
"""

import math

import ml_collections

from configs import pcfg_study

VARIANTS = ('main', 'mixing', 'jailbreak', 'randft')


def log_grid(first: int, last: int, per_doubling: int = 3) -> tuple[int, ...]:
  """Steps first .. last, per_doubling of them per doubling (rounded, distinct)."""
  n = int(per_doubling * math.log2(last / first))
  return tuple(sorted({round(first * 2 ** (k / per_doubling)) for k in range(n + 1)} | {last}))


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """arg: '<scale>[,<variant>]' with scale '' / 'cpu' / 'paper' / 'smoke' and a variant of VARIANTS."""
  scale, _, variant = arg.partition(',')
  scale = '' if scale == 'cpu' else scale
  variant = variant or 'main'
  if variant not in VARIANTS:
    raise ValueError(f'configs/pcfg_analysis.py: unknown variant {variant!r}; valid: {VARIANTS}.')
  c = pcfg_study.get_config(scale)
  c.experiment = 'pcfg_analysis'
  c.finetune.eval_steps = (25, 50, 100, 200, 300, 400, 500)  # Curves of Figs 5/6.

  c.analysis = ml_collections.ConfigDict(dict(
      variant=variant,  # Which figure group: 'main' (Figs 5-9, 26, 79-98), 'mixing', 'jailbreak', 'randft'.
      pt_fractions=(0.5, 0.1, 0.001),  # App. E.1 fractions of pretraining data in fine-tuning batches.
      probe_layers=(),  # Sites probed: () = all, B0 (embeddings) .. B_L; e.g. (0, 2).
      probe_method='adamw',  # 'adamw': the paper's protocol; 'closed_form': ridge, seconds.
      probe_steps=4000,  # Paper: 4K iterations, lr 1e-3, x0.1 at 2K/3K/3.5K.
      probe_lr=1e-3,
      probe_train_samples=2000,
      probe_test_samples=500,
      pruning=True,  # grad x weight and learned-mask pruning (Figs 7, 79-89).
      prune_matrices='blocks',  # 'blocks' (every linear layer in the blocks), 'mlp', 'mlp_hidden'.
      prune_samples=512,  # Prompts the scores (and the learned mask) are computed on.
      k_max=100,  # Curves over K = 0..15 one by one, then every k_step up to k_max.
      k_step=5,
      prune_eval_samples=200,  # Per test set (count a, count b; C_Te = 0) of each pruned model.
      prune_chunk=1,  # Masks evaluated at once per device; 1 is fastest on CPU (benchmarks/pruning_sweep.py).
      member_chunk=6,  # Models whose scores / learned masks are computed at once (memory bound).
      mask_steps=100,  # Learned mask: Adam steps (each a backward pass of every model).
      mask_samples=64,  # Learned mask: the first mask_samples of the scoring prompts.
      mask_lr=0.1,
      mask_sparsity=0.01,  # Penalty per removed unit, in nats of the count-a loss.
      reft=True,  # Reverse fine-tuning with Scr.+FT and Scr. (Figs 9, 26, 28-29).
      reft_lrs=(),  # eta_M, eta_S; () = those of the fine-tuning lrs (calibrated at CPU scale).
      reft_source_c_trs=(0.0, 1.0),  # Fine-tuned models reverse-fine-tuned (at the largest lr).
      reft_steps=500,  # Paper: 10K (as fine-tuning).
      # 3 evaluations per doubling (issue 29: P4's thresholds, read off the paper's log-scale
      # Fig. 9, are decided where 51-100 must not all read as 100): 5, 6, 8, 10, ..., 500.
      reft_eval_steps=log_grid(5, 500),
      scr_ft_prior=(0.003, 0.997, 0.0),  # Scr.+FT base: the mirror of the (CPU) low prior.
      revival_threshold=90.0,  # Acc O_PT (%) that counts as revived.
  ))
  if scale in ('paper', 'smoke'):
    c.analysis.reft_lrs = (1e-5, 1e-6)  # eta_M, eta_S (App. C); smoke: fixed.
    c.analysis.scr_ft_prior = (0.001, 0.999, 0.0)  # The mirror of tasks.PRIORS['low'].
  if scale == 'paper':
    c.finetune.eval_steps = (500, 1_000, 2_000, 4_000, 6_000, 8_000, 10_000)
    c.analysis.probe_train_samples = 4000
    c.analysis.probe_test_samples = 1000
    c.analysis.prune_eval_samples = 1000
    c.analysis.prune_chunk = 16  # A GPU has the memory to evaluate masks side by side.
    c.analysis.mask_steps = 300
    c.analysis.mask_samples = 512
    c.analysis.k_step = 1
    c.analysis.reft_steps = 10_000
    c.analysis.reft_eval_steps = log_grid(30, 10_000)
  elif scale == 'smoke':
    c.finetune.eval_steps = (2, 4)
    c.analysis.probe_steps = 20
    c.analysis.probe_train_samples = 64
    c.analysis.probe_test_samples = 32
    c.analysis.prune_samples = 16
    c.analysis.prune_eval_samples = 16
    c.analysis.k_max = 6
    c.analysis.mask_steps = 5
    c.analysis.mask_samples = 8
    c.analysis.reft_steps = 4
    c.analysis.reft_eval_steps = (2, 4)

  if variant == 'mixing':
    c.analysis.pruning = False
    c.analysis.reft = False
  elif variant == 'jailbreak':
    c.data.families = ('C', 'CC', 'I', 'IC', 'T', 'T_J1', 'T_J2')
    c.analysis.pruning = False
    c.analysis.reft = False
  elif variant == 'randft':
    c.analysis.pruning = False
  return c
