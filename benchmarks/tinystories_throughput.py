"""Training and sampling tokens/s of the TinyStories model, at the study's shapes.

  python benchmarks/tinystories_throughput.py                # CPU shape (and paper on a GPU)
  python benchmarks/tinystories_throughput.py --shape=paper  # paper shape (GPU; on CPU tiny batch)
  python benchmarks/tinystories_throughput.py --steps=10 --warmup=2

Shapes are those of configs/tinystories_study.py:
  cpu    llama_config(vocab 512, context 256, width 64, 2 layers, 4 heads), batch 16
  paper  llama_config(vocab 8192, context 1024, width 768, 12 layers, 12 heads), ~91M
         parameters, batch 128 (the paper's pretraining batch)
By default the cpu shape runs everywhere and the paper shape only when
jax.default_backend() is a GPU/TPU; --shape=paper forces it (on a CPU use a
tiny --batch, e.g. 1: one step of the full shape takes minutes).

Training: `train.make_train_step` (jit, state donated) with the study's loss
(next-token cross-entropy on every position of [B, T + 1] windows) and
optimizer (AdamW 0.9/0.95, weight decay 0.1, clip 1.0), fp32, random tokens;
--warmup untimed steps (compilation), then --steps timed steps, each to
completion. Reported: median s/step and tokens/s = batch x context / median.
With several devices the step is data-parallel over all of them
(train.data_mesh()), as the study runs.

Sampling: `sampling.generate` (one jit, KV cache, temperature 1.0) from
--gen-batch prompts of --prompt-len tokens, --new-tokens new tokens each (the
study's: 64 x 144 at cpu scale, 16 x 350 at paper scale; prompts ~100 tokens).
No eos, so every row runs to the end. tokens/s = batch x new tokens / time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

import machine  # benchmarks/machine.py (the script's own folder is on sys.path)
import numpy as np

from wrapper_study import losses
from wrapper_study import model
from wrapper_study import model_factory
from wrapper_study import optim
from wrapper_study import sampling
from wrapper_study import train

SHAPES = {
    'cpu': dict(vocab=512, context=256, d_model=64, n_layers=2, n_heads=4, multiple_of=32,
                batch=16, gen_batch=64, new_tokens=144, prompt_len=96),
    'paper': dict(vocab=8192, context=1024, d_model=768, n_layers=12, n_heads=12, multiple_of=64,
                  batch=128, gen_batch=16, new_tokens=350, prompt_len=128),
}
OPT = dict(name='adamw', lr=1e-3, b1=0.9, b2=0.95, weight_decay=0.1, schedule='constant',
           grad_clip_norm=1.0)
# The paper's token counts, for the time estimate printed at the end.
PAPER_PRETRAIN_TOKENS = 30_000 * 128 * 1024  # Per pretrained model (two of them).
PAPER_FINETUNE_TOKENS = 4000 * 128 * 1024  # Per deletion or reFT run (6 + 7 of them).


def model_config(shape: dict, precision: str = 'fp32',
                 attention: str = 'explicit') -> model.TransformerConfig:
  """The study's factory (tinystories/model.py): the `model` section with flavour 'llama'."""
  return model_factory.from_config(dict(
      flavour='llama', vocab_size=shape['vocab'], max_len=shape['context'],
      d_model=shape['d_model'], n_layers=shape['n_layers'], n_heads=shape['n_heads'],
      multiple_of=shape['multiple_of'], precision=precision, attention=attention))


def time_training(cfg, batch: int, steps: int, warmup: int, seed: int) -> dict:
  params = model.init_params(cfg, jax.random.key(seed))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  tx = optim.make_optimizer(OPT, warmup + steps)
  mesh = train.data_mesh()
  if batch % mesh.size:
    raise SystemExit(f'--batch={batch} must be divisible by the {mesh.size} devices.')
  step_fn = train.make_train_step(losses.next_token_loss_fn(cfg), tx, mesh=mesh)
  state = jax.device_put(train.create_state(params, tx), train.data_shardings(mesh)[0])
  rng = np.random.default_rng(seed)
  windows = train.shard_batch(
      rng.integers(0, cfg.vocab_size, (batch, cfg.max_len + 1), dtype=np.int32), mesh)
  flops = machine.step_flops(step_fn, state, windows)
  times, first = [], None
  for i in range(warmup + steps):
    start = time.perf_counter()
    state, metrics = step_fn(state, windows)
    jax.block_until_ready(metrics)
    dt = time.perf_counter() - start
    if i == 0:
      first = dt
    if i >= warmup:
      times.append(dt)
  median = statistics.median(times)
  return dict(n_params=n_params, flops=flops, first=first, median=median, min=min(times), max=max(times),
              tokens_per_s=batch * cfg.max_len / median, loss=float(metrics['loss']))


def time_sampling(cfg, batch: int, prompt_len: int, new_tokens: int, repeats: int,
                  seed: int) -> dict:
  params = model.init_params(cfg, jax.random.key(seed))
  rng = np.random.default_rng(seed)
  prompt = rng.integers(4, cfg.vocab_size, (batch, prompt_len), dtype=np.int32)
  mask = np.ones((batch, prompt_len), bool)
  run = lambda k: jax.block_until_ready(sampling.generate(
      cfg, params, prompt, mask, new_tokens, jax.random.key(k), temperature=1.0))
  start = time.perf_counter()
  run(0)  # Compiles.
  first = time.perf_counter() - start
  times = []
  for k in range(repeats):
    start = time.perf_counter()
    run(k + 1)
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return dict(first=first, median=median, tokens_per_s=batch * new_tokens / median)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shape', choices=('auto',) + tuple(SHAPES), default='auto',
                      help="auto: cpu, plus paper when a GPU/TPU is present")
  parser.add_argument('--batch', type=int, default=None, help='training sequences per step')
  parser.add_argument('--gen-batch', type=int, default=None, help='prompts sampled at once')
  parser.add_argument('--new-tokens', type=int, default=None, help='tokens sampled per prompt')
  parser.add_argument('--steps', type=int, default=5, help='timed training steps')
  parser.add_argument('--warmup', type=int, default=1, help='untimed steps first (compiles)')
  parser.add_argument('--gen-repeats', type=int, default=3, help='timed sampling calls')
  parser.add_argument('--no-sampling', action='store_true')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--precision', default='fp32', choices=tuple(model.PRECISIONS),
                      help='model.precision: fp32, tf32 (GPU/TPU), bf16 compute')
  parser.add_argument('--attention', default='explicit', choices=model.ATTENTIONS,
                      help="model.attention: 'explicit', or 'fused' (the :paper config's; cuDNN "
                           'flash attention on GPU under bf16)')
  args = parser.parse_args()

  print('\n'.join(machine.describe()))
  peak = machine.matmul_flops_per_s(precision=args.precision)
  print(f'peak {args.precision} matmul (2048^3, best of 5): {peak / 1e9:.1f} GFLOP/s')
  accelerator = jax.default_backend() in ('gpu', 'cuda', 'rocm', 'tpu')
  shapes = [args.shape] if args.shape != 'auto' else ['cpu'] + (['paper'] if accelerator else [])
  if args.shape == 'auto' and not accelerator:
    print('paper shape skipped: it needs a GPU (run with --shape=paper --batch=1 to time one '
          'small step on this CPU anyway).')
  for name in shapes:
    shape = dict(SHAPES[name])
    for key in ('batch', 'gen_batch', 'new_tokens'):
      if getattr(args, key) is not None:
        shape[key] = getattr(args, key)
    cfg = model_config(shape, args.precision, args.attention)
    t = time_training(cfg, shape['batch'], args.steps, args.warmup, args.seed)
    print(f"\nshape '{name}': {cfg.n_layers} layers x {cfg.d_model} ({cfg.n_heads} heads, SwiGLU "
          f"{cfg.d_mlp}), vocab {cfg.vocab_size}, context {cfg.max_len}; {t['n_params']:,} params")
    print(f"train  batch {shape['batch']} x {cfg.max_len}: 1st step {t['first']:.2f} s, median "
          f"{t['median']:.4f} s/step (min {t['min']:.4f}, max {t['max']:.4f}), "
          f"{t['tokens_per_s']:,.0f} tokens/s  (loss {t['loss']:.2f})")
    print('  ' + machine.floor_line(f'train step ({args.precision})', t['flops'], t['median'],
                                    peak))
    if not args.no_sampling:
      s = time_sampling(cfg, shape['gen_batch'], shape['prompt_len'], shape['new_tokens'],
                        args.gen_repeats, args.seed)
      print(f"sample batch {shape['gen_batch']} x {shape['new_tokens']} new tokens after "
            f"{shape['prompt_len']}: 1st call {s['first']:.2f} s, median {s['median']:.3f} s, "
            f"{s['tokens_per_s']:,.0f} tokens/s")
    if name == 'paper':
      pre = PAPER_PRETRAIN_TOKENS / t['tokens_per_s']
      fine = PAPER_FINETUNE_TOKENS / t['tokens_per_s']
      print(f'paper-scale training time at this rate: pretraining {pre / 3600:.1f} h per model '
            f'(x2), deletion/reFT {fine / 3600:.2f} h per run (x13): '
            f'{(2 * pre + 13 * fine) / 3600:.1f} h in all (fp32, no evaluation time).')


if __name__ == '__main__':
  machine.ensure_fast_allocator()  # The launcher's allocator: same speed as a run.
  main()
