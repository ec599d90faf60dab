"""The audit at GPT-2-small shape: wall time and peak memory per phase.

  python benchmarks/audit_gpt2.py                      # 124M-parameter pair, 512 prompts
  python benchmarks/audit_gpt2.py --prompts=64 --layers=2   # a quick look

A random GPT-2-small-shaped pretrained model (12 blocks, width 768, 12 heads,
MLP 3072, vocabulary 50257, tied embeddings, tanh GELU: 124M parameters) and a
"fine-tuned" copy (the same weights plus 1% noise) are written in the Hugging
Face layout (`hf.export.save_pretrained`), with a capability spec of --prompts
O_PT rows (16 random tokens; answer: the first) and as many O_FT rows (answer:
the last), half of each held out. Then the audit's stages run in order as
`wrapper-study audit` runs them (the benchmark imports no experiment): load the
pair, accuracy and loss, weight change, probes (every block, both models, the
audit's probe protocol at --probe-steps), pruning of neurons and of weights
(K in --ks, one random draw), reFT beside the control (--reft-steps, 2 seeds,
batch 8), verdicts. Random models make the verdicts meaningless: the figures
are time and memory.

Per phase: wall seconds, and the peak resident memory of the process during
the phase (sampled every 50 ms; a device's peak bytes in use where the backend
reports it). Printed with the machine (benchmarks/machine.py): on a loaded
2-core host the times are an upper bound.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import threading
import time

import machine  # benchmarks/machine.py (the script's own folder is on sys.path)

import jax
import numpy as np
import psutil

from configs import audit as audit_config
from wrapper_study import model as model_lib
from wrapper_study.audit import measure
from wrapper_study.audit import models
from wrapper_study.audit import prune
from wrapper_study.audit import revive
from wrapper_study.audit import spec as spec_lib
from wrapper_study.audit import verdicts
from wrapper_study.hf import export


class PeakMemory:
  """Peak RSS of this process while the block runs (a 50 ms sampler thread)."""

  def __enter__(self):
    self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
    self.peak = self.proc.memory_info().rss
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    return self

  def _run(self):
    while not self._stop.wait(0.05):
      self.peak = max(self.peak, self.proc.memory_info().rss)

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, self.proc.memory_info().rss)


def device_peak() -> str:
  stats = jax.devices()[0].memory_stats() or {}
  return f'{stats["peak_bytes_in_use"] / 2**30:.2f}' if 'peak_bytes_in_use' in stats else '-'


def gpt2_small(layers: int) -> model_lib.TransformerConfig:
  return model_lib.TransformerConfig(vocab_size=50257, max_len=1024, d_model=768,
                                     n_layers=layers, n_heads=12, d_head=64, d_mlp=3072,
                                     activation='gelu_tanh', layer_norm=True, causal=True,
                                     tied_embeddings=True)


def write_pair(root: pathlib.Path, layers: int, prompts: int, length: int) -> pathlib.Path:
  cfg = gpt2_small(layers)
  pre = model_lib.init_params(cfg, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  ft = jax.tree.map(lambda x: np.asarray(x) * (1 + 0.01 * rng.standard_normal(x.shape,
                                                                            np.float32)), pre)
  export.save_pretrained(cfg, pre, root / 'pretrained')
  export.save_pretrained(cfg, ft, root / 'finetuned')
  for name, pick in (('o_pt', 0), ('o_ft', -1)):
    rows = rng.integers(0, cfg.vocab_size, (prompts, length))
    (root / f'{name}.jsonl').write_text('\n'.join(
        json.dumps({'prompt': r.tolist(), 'answer': [int(r[pick])]}) for r in rows))
  (root / 'spec.json').write_text(json.dumps({'name': 'gpt2 copy first', 'o_pt': 'o_pt.jsonl',
                                              'o_ft': 'o_ft.jsonl'}))
  return root


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--prompts', type=int, default=512)
  p.add_argument('--length', type=int, default=16)
  p.add_argument('--layers', type=int, default=12)
  p.add_argument('--probe-steps', type=int, default=200)
  p.add_argument('--ks', default='0,10,100')
  p.add_argument('--reft-steps', type=int, default=10)
  p.add_argument('--chunk', type=int, default=32)
  args = p.parse_args()
  machine.ensure_fast_allocator()
  config = audit_config.get_config()
  config.probe.steps, config.probe.seeds = args.probe_steps, (0, 1)
  ks = tuple(int(k) for k in args.ks.split(','))
  config.pruning.update(neuron_ks=ks, weight_ks=ks, random_draws=1)
  config.reft.update(seeds=(0, 1), steps=args.reft_steps, eval_every=args.reft_steps,
                     batch_size=8, control_ft_steps=args.reft_steps)
  rows = []

  def phase(name, fn):
    t0 = time.perf_counter()
    with PeakMemory() as mem:
      out = jax.block_until_ready(fn())
    rows.append((name, time.perf_counter() - t0, mem.peak / 2**30, device_peak()))
    print(f'  {name:<28} {rows[-1][1]:8.1f} s  peak RSS {rows[-1][2]:6.2f} GiB  '
          f'device peak {rows[-1][3]} GiB', flush=True)
    return out

  with tempfile.TemporaryDirectory() as tmp:
    root = phase('write pair (not audit)', lambda: write_pair(pathlib.Path(tmp), args.layers,
                                                              args.prompts, args.length))
    cap = phase('load capability spec', lambda: spec_lib.load(str(root / 'spec.json')))
    cfg, pre, ft = phase('load pair (safetensors)', lambda: models.load_pair(
        root / 'pretrained', root / 'finetuned'))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(pre))
    spec_lib.validate(cap, cfg.vocab_size, cfg.n_outputs, cfg.max_len)
    pair = {'pretrained': pre, 'finetuned': ft}
    acc = phase('accuracy and loss', lambda: measure.set_metrics(
        cfg, pair, {'o_pt': cap.o_pt_eval, 'o_ft': cap.o_ft_eval}, args.chunk))
    phase('weight change', lambda: measure.weight_rows(pre, ft))
    probes = phase('probes', lambda: measure.probes(cfg, pair, cap, config.probe, args.chunk))
    outs = {}
    for g in ('neuron', 'weight'):
      outs[g] = phase(f'pruning {g}', lambda g=g: prune.sweep(cfg, pre, ft, cap, config.pruning,
                                                              0, args.chunk, g))
    reft = phase('reFT + control', lambda: revive.reft(cfg, ft, cap, config.reft, args.chunk))
    pre_acc = measure.lookup(acc, 'pretrained', 'o_pt')
    ft_acc = measure.lookup(acc, 'finetuned', 'o_pt')
    phase('verdicts', lambda: verdicts.all_claims(pre_acc, ft_acc, probes, outs, reft,
                                                 config.verdicts, config.reft.eval_every))
  print(f'\naudit of a random GPT-2-small-shaped pair: {n_params / 1e6:.1f}M parameters, '
        f'{args.layers} blocks, {args.prompts} O_PT + {args.prompts} O_FT prompts of '
        f'{args.length} tokens (half held out), chunk {args.chunk}, probe steps '
        f'{args.probe_steps} x 2 seeds, K {ks} x (top-K, 1 random, pretrained), reFT '
        f'{args.reft_steps} steps x 2 seeds x 2 arms')
  print('| phase | wall s | peak RSS GiB | device peak GiB |\n|---|---|---|---|')
  for name, s, rss, dev in rows:
    print(f'| {name} | {s:.1f} | {rss:.2f} | {dev} |')
  audit_total = sum(s for name, s, _, _ in rows if not name.endswith('(not audit)'))
  print(f'| total (audit) | {audit_total:.1f} | {max(r[2] for r in rows):.2f} | |')
  print('\n'.join(machine.describe()))


if __name__ == '__main__':
  main()
