"""Training tokens/s at the paper's PCFG shape: our JAX/Flax model vs PyTorch.

  python benchmarks/pcfg_train_throughput.py                 # paper shape, 96 x 259
  python benchmarks/pcfg_train_throughput.py --shape=cpu     # small preset, quick
  python benchmarks/pcfg_train_throughput.py --steps=3 --warmup=1 --torch-attention=sdpa,explicit

The paper's PCFG model is minGPT's 'gpt-mini': 6 layers, 6 heads, width 192
(d_head 32), MLP 768, GELU, pre-LayerNorm blocks plus a final LN, causal,
vocabulary 268, 259-token sequences, batch 96. Both sides train that shape on
the same random tokens, next-token cross-entropy over every position, fp32, no
dropout, global-norm clip 1.0 then AdamW (lr 1e-3, weight decay 0.1 on every
parameter, as optax.adamw does):

  jax (fused)       `model.Transformer` (layer_norm, causal, exact GELU), attention
                    `model.attention='fused'` (jax.nn.dot_product_attention); AdamW
                    from `optim.make_optimizer`, loss `losses.weighted_cross_entropy`,
                    step `train.make_train_step` (jit, state donated). Its step
                    also computes the train loop's metrics (accuracy, grad /
                    update / param norms), which PyTorch does not.
  jax (explicit)    the same with `model.attention='explicit'` (scores, masked
                    softmax, pattern: the order compiled Tracr models need).
  jax (.., three_matmuls)  with --jax-qkv=one_matmul,three_matmuls: the same with q, k
                    and v as three matmuls (`model.qkv`; default one, as minGPT's c_attn).
  torch (sdpa)      a minGPT-equivalent written below, attention through
                    `torch.nn.functional.scaled_dot_product_attention(is_causal=True)`;
  torch (explicit)  the same with minGPT's classic masked softmax (att = q k^T /
                    sqrt(d), masked_fill(-inf), softmax, att v), which is what
                    our JAX model does.

Both models have the same parameters (separate q/k/v Dense layers with biases
hold as many numbers as minGPT's fused c_attn); the script prints the exact
counts and, before timing, copies the JAX parameters into the PyTorch model
and checks that the logits agree.

With several devices (the launcher's and every benchmark's two CPU devices,
wrapper_study/host_devices.py) the first JAX row also runs data-parallel over
them, as the PCFG study pretrains (train.batch_mesh): `jax (fused, 2 dev)`, the
JAX of the "ratio JAX / torch" lines; WRAPPER_STUDY_CPU_DEVICES=1 leaves one.

Timing protocol, the same for each implementation: one implementation at a
time, each in a fresh worker process (so that no two models' memory is ever
resident together: in one process their buffers made page faults take whole
steps, see main()), --warmup untimed steps (JAX: compilation), then --steps
timed steps, each timed to completion (block_until_ready for JAX; PyTorch on
CPU is synchronous). --rounds=N repeats the pass N times, every second one in
reverse order, so that a drift of the machine's speed falls alike on all (the
medians are over every round). Reported: median s/step, tokens/s = batch * seq
/ median, and the ratio JAX tokens/s / PyTorch tokens/s (> 1: JAX is faster).

PyTorch is optional and not a project dependency. Without it the script says so
and reports JAX alone. Install the CPU build (a plain `pip install torch` pulls
a multi-GB CUDA build):

  pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

(on the project machine a CPU wheel is on the local find-links path, so
`pip install torch==2.13.0` picks it.) The allocator matters a great deal on
CPU (see the project's perf notes): like every binary, the script re-executes
itself once with the launcher's allocator (tcmalloc where installed, else
mimalloc from its wheel, see wrapper_study/allocator.py; both JAX and torch then
use it) and prints which is active; compare with `WRAPPER_STUDY_ALLOCATOR=mimalloc`,
`=glibc` or `=off`.
Each step's CPU seconds (its process's threads) are printed beside the wall
time: on a machine other jobs share they move less than the wall.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import machine  # benchmarks/machine.py (the script's own folder is on sys.path)
from wrapper_study import losses
from wrapper_study import model
from wrapper_study import optim
from wrapper_study import train

# name -> (n_layers, n_heads, d_model, d_head, d_mlp, vocab, seq, batch)
SHAPES = {
    'paper': dict(n_layers=6, n_heads=6, d_model=192, d_head=32, d_mlp=768,
                  vocab=268, seq=259, batch=96),
    'cpu': dict(n_layers=4, n_heads=4, d_model=128, d_head=32, d_mlp=512,
                vocab=268, seq=67, batch=32),
}
OPT = dict(name='adamw', lr=1e-3, schedule='constant', grad_clip_norm=1.0, weight_decay=0.1)
ATTENTIONS = ('sdpa', 'explicit')


# ----------------------------------------------------------------------------- machine


def _env_flags() -> str:
  keys = sorted(k for k in os.environ
                if k == 'LD_PRELOAD' or k.startswith('MALLOC_') or k in (
                    'GLIBC_TUNABLES', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'XLA_FLAGS'))
  return ', '.join(f'{k}={os.environ[k]}' for k in keys) or 'none set'


def _machine(torch) -> list[str]:
  try:
    usable = len(os.sched_getaffinity(0))
  except AttributeError:
    usable = os.cpu_count()
  lines = [f'platform: {platform.platform()}, python {platform.python_version()}',
           f'cpu: {machine.cpu_name()}, os.cpu_count={os.cpu_count()}, usable={usable}',
           f'jax {jax.__version__} (devices: {jax.devices()})']
  if torch is not None:
    lines.append(f'torch {torch.__version__}, threads={torch.get_num_threads()}, '
                 f'interop threads={torch.get_num_interop_threads()}')
  lines.append(f'allocator: {machine.allocator.active()}; allocator/thread env: {_env_flags()}')
  lines.append('load average (1/5/15 min): %.2f %.2f %.2f' % os.getloadavg())
  return lines


# ----------------------------------------------------------------------------- jax

def jax_config(shape: dict, precision: str = 'fp32', attention: str = 'explicit',
               qkv: str = 'one_matmul') -> model.TransformerConfig:
  """Our Flax model at this shape."""
  return model.TransformerConfig(
      vocab_size=shape['vocab'], max_len=shape['seq'], d_model=shape['d_model'],
      n_layers=shape['n_layers'], n_heads=shape['n_heads'], d_head=shape['d_head'],
      d_mlp=shape['d_mlp'], activation='gelu', layer_norm=True, causal=True,
      precision=precision, attention=attention, qkv=qkv)


def make_jax(shape: dict, steps: int, seed: int, precision: str = 'fp32',
             attention: str = 'explicit', qkv: str = 'one_matmul', mesh=None):
  """(step() -> None, param count, params, config, flops(batch)) for our Flax model; with a
  mesh, data-parallel over its devices (train.batch_mesh, as the PCFG study pretrains: pass
  the batch placed with train.shard_batch)."""
  config = jax_config(shape, precision, attention, qkv)
  params = model.init_params(config, jax.random.key(seed))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  tx = optim.make_optimizer(OPT, steps)

  def loss_fn(p, batch):
    logits_BxTxO, _ = model.Transformer(config).apply({'params': p}, batch['inputs'])
    return losses.weighted_cross_entropy(logits_BxTxO, batch['targets'])

  step_fn = train.make_train_step(loss_fn, tx, mesh=mesh)
  # The state is donated, so keep a separate copy of the initial params.
  box = {'state': train.create_state(jax.tree.map(jnp.copy, params), tx)}
  if mesh is not None:
    box['state'] = jax.device_put(box['state'], train.data_shardings(mesh)[0])

  def step(batch):
    box['state'], metrics = step_fn(box['state'], batch)
    jax.block_until_ready(box['state'])
    return float(metrics['loss'])

  flops = lambda batch: machine.step_flops(step_fn, box['state'], batch)
  return step, n_params, params, config, flops


# ----------------------------------------------------------------------------- torch

def torch_model_class(torch):
  """A compact minGPT: token + position embedding, pre-LN blocks, final LN, untied head."""
  nn, F = torch.nn, torch.nn.functional

  class CausalSelfAttention(nn.Module):

    def __init__(self, d_model, n_heads, d_head, seq, attention):
      super().__init__()
      self.h, self.k, self.attention = n_heads, d_head, attention
      self.c_attn = nn.Linear(d_model, 3 * n_heads * d_head)  # q, k, v fused, as minGPT.
      self.c_proj = nn.Linear(n_heads * d_head, d_model)
      self.register_buffer('mask', torch.tril(torch.ones(seq, seq, dtype=torch.bool)),
                           persistent=False)

    def forward(self, x):
      B, T, _ = x.shape
      q, k, v = self.c_attn(x).split(self.h * self.k, dim=2)
      q, k, v = (y.view(B, T, self.h, self.k).transpose(1, 2) for y in (q, k, v))
      if self.attention == 'sdpa':
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
      else:  # minGPT's classic explicit masked softmax.
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.k))
        att = att.masked_fill(~self.mask[:T, :T], float('-inf'))
        z = F.softmax(att, dim=-1) @ v
      return self.c_proj(z.transpose(1, 2).contiguous().view(B, T, self.h * self.k))

  class Block(nn.Module):

    def __init__(self, d_model, n_heads, d_head, d_mlp, seq, attention):
      super().__init__()
      self.ln_1 = nn.LayerNorm(d_model, eps=1e-5)
      self.attn = CausalSelfAttention(d_model, n_heads, d_head, seq, attention)
      self.ln_2 = nn.LayerNorm(d_model, eps=1e-5)
      self.c_fc = nn.Linear(d_model, d_mlp)
      self.c_proj = nn.Linear(d_mlp, d_model)

    def forward(self, x):
      x = x + self.attn(self.ln_1(x))
      return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))  # Exact (erf) GELU.

  class GPT(nn.Module):

    def __init__(self, shape, attention):
      super().__init__()
      s = shape
      self.wte = nn.Embedding(s['vocab'], s['d_model'])
      self.wpe = nn.Embedding(s['seq'], s['d_model'])
      self.blocks = nn.ModuleList(
          Block(s['d_model'], s['n_heads'], s['d_head'], s['d_mlp'], s['seq'], attention)
          for _ in range(s['n_layers']))
      self.ln_f = nn.LayerNorm(s['d_model'], eps=1e-5)
      self.lm_head = nn.Linear(s['d_model'], s['vocab'], bias=False)
      for name, p in self.named_parameters():
        if name.endswith('weight') and p.dim() == 2:
          nn.init.normal_(p, std=0.02)
        elif name.endswith('bias'):
          nn.init.zeros_(p)

    def forward(self, idx):
      T = idx.shape[1]
      x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))[None]
      for block in self.blocks:
        x = block(x)
      return self.lm_head(self.ln_f(x))

  return GPT


def load_jax_params(torch, gpt, params, shape) -> None:
  """Copies our Flax params into the minGPT (to check that both compute the same)."""
  t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))
  sd = {'wte.weight': t(params['embed']['embedding']),
        'wpe.weight': t(params['pos_embed']['embedding']),
        'ln_f.weight': t(params['ln_final']['scale']),
        'ln_f.bias': t(params['ln_final']['bias']),
        'lm_head.weight': t(params['unembed']['kernel']).T}
  for l in range(shape['n_layers']):
    p, b = params[f'blocks_{l}'], f'blocks.{l}.'
    qkv = [p['attn'][n] for n in ('query', 'key', 'value')]
    sd.update({
        b + 'ln_1.weight': t(p['ln1']['scale']), b + 'ln_1.bias': t(p['ln1']['bias']),
        b + 'ln_2.weight': t(p['ln2']['scale']), b + 'ln_2.bias': t(p['ln2']['bias']),
        b + 'attn.c_attn.weight': torch.cat([t(d['kernel']).T for d in qkv], 0),
        b + 'attn.c_attn.bias': torch.cat([t(d['bias']) for d in qkv], 0),
        b + 'attn.c_proj.weight': t(p['attn']['out']['kernel']).T,
        b + 'attn.c_proj.bias': t(p['attn']['out']['bias']),
        b + 'c_fc.weight': t(p['mlp']['fc_in']['kernel']).T,
        b + 'c_fc.bias': t(p['mlp']['fc_in']['bias']),
        b + 'c_proj.weight': t(p['mlp']['fc_out']['kernel']).T,
        b + 'c_proj.bias': t(p['mlp']['fc_out']['bias'])})
  gpt.load_state_dict({k: v.contiguous() for k, v in sd.items()}, strict=True)


def make_torch(torch, shape: dict, attention: str, seed: int):
  """(step(batch) -> loss, param count, model) for the PyTorch minGPT."""
  F = torch.nn.functional
  torch.manual_seed(seed)
  gpt = torch_model_class(torch)(shape, attention)
  gpt.train()
  n_params = sum(p.numel() for p in gpt.parameters())
  opt = torch.optim.AdamW(gpt.parameters(), lr=OPT['lr'], betas=(0.9, 0.999), eps=1e-8,
                          weight_decay=OPT['weight_decay'])

  def step(batch):
    inputs, targets = batch
    opt.zero_grad(set_to_none=True)
    logits = gpt(inputs)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(gpt.parameters(), OPT['grad_clip_norm'])
    opt.step()
    return float(loss.detach())

  return step, n_params, gpt


# ----------------------------------------------------------------------------- main

def data_seconds(shape_name: str, on_device: bool, n: int = 20) -> tuple[float, int]:
  """(median s, batch size) to make one PCFG pretraining batch as the study does
  (configs/pcfg_study.py at this shape's scale: grammar windows, five families, the first
  prior), by numpy on the host or with data.on_device in one jitted function."""
  from configs import pcfg_study  # pylint: disable=g-import-not-at-top
  from wrapper_study.pcfg import train as pcfg_train  # pylint: disable=g-import-not-at-top
  config = pcfg_study.get_config('paper' if shape_name == 'paper' else '')
  config.data.on_device = on_device
  batch_fn = pcfg_train.pretrain_batch_fn(config, config.pretrain.priors[0], 0)
  seconds = []
  for step in range(n + 1):  # The first call compiles the device sampler.
    start = time.perf_counter()
    jax.block_until_ready(batch_fn(step))
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds[1:]), config.pretrain.batch_size


class _Worker:
  """One implementation in a process of its own (multiprocessing, spawn), stepped on request."""

  def __init__(self, name: str, spec: dict):
    self.name = name
    context = multiprocessing.get_context('spawn')  # A fresh interpreter: its own allocator.
    self._conn, child = context.Pipe()
    self._process = context.Process(target=_worker_main, args=(child, spec), daemon=True)
    self._process.start()
    child.close()
    self.ready = self._receive()

  def _receive(self):
    try:
      reply = self._conn.recv()
    except EOFError:
      raise RuntimeError(f'{self.name}: its worker process ended (exit code '
                         f'{self._process.exitcode}); see its output above') from None
    if isinstance(reply, dict) and 'error' in reply:
      raise RuntimeError(f"{self.name}: {reply['error']}")
    return reply

  def call(self, command: str):
    try:
      self._conn.send(command)
    except BrokenPipeError:
      pass  # It ended; _receive says how.
    return self._receive()

  def step(self) -> tuple[float, float, float]:
    """(seconds to completion, loss, CPU seconds of the worker's threads) of one step."""
    return self.call('step')

  def close(self) -> None:
    self._conn.send('stop')
    self._process.join()


def _worker_main(conn, spec: dict) -> None:
  """Builds one implementation, then answers 'step' (seconds, loss, CPU seconds), 'flops',
  'stop'."""
  try:
    shape, data_BxT1 = spec['shape'], spec['data']
    inputs, targets = data_BxT1[:, :-1], data_BxT1[:, 1:]
    ready = {}
    if spec['kind'] == 'jax':
      mesh = train.batch_mesh(shape['batch']) if spec['mesh'] else None
      step, ready['n_params'], _, _, flops = make_jax(
          shape, spec['steps'], spec['seed'], spec['precision'], spec['attention'],
          spec['qkv'], mesh)
      batch = dict(inputs=jnp.asarray(inputs, jnp.int32),
                   targets=jnp.asarray(targets, jnp.int32))
      if mesh is not None:
        batch = train.shard_batch(batch, mesh)
    else:
      import torch  # pylint: disable=g-import-not-at-top
      if spec['threads']:
        torch.set_num_threads(spec['threads'])
      step, ready['n_params'], gpt = make_torch(torch, shape, spec['attention'], spec['seed'])
      batch = (torch.from_numpy(inputs), torch.from_numpy(targets))
      flops = None
      if spec['check'] is not None:  # Both sides then also train from the same parameters.
        params, tokens, want = spec['check']
        load_jax_params(torch, gpt, params, shape)
        with torch.no_grad():
          got = gpt(torch.from_numpy(tokens)).numpy()
        ready['diff'] = float(np.max(np.abs(got - want)))
    conn.send(ready)
    while (command := conn.recv()) != 'stop':
      if command == 'flops':
        conn.send(flops(batch))
      else:
        start, cpu = time.perf_counter(), time.process_time()
        loss = step(batch)
        conn.send((time.perf_counter() - start, loss, time.process_time() - cpu))
  except Exception as e:  # pylint: disable=broad-except
    conn.send({'error': f'{type(e).__name__}: {e}'})
    raise


def main():
  # Each implementation's worker process holds its own accelerator memory (one GPU is shared).
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shape', choices=sorted(SHAPES), default='paper',
                      help='model/batch preset; the flags below override its fields')
  parser.add_argument('--batch', type=int, default=None, help='sequences per step')
  parser.add_argument('--seq', type=int, default=None, help='tokens per sequence (model input)')
  parser.add_argument('--steps', type=int, default=5, help='timed steps per implementation')
  parser.add_argument('--warmup', type=int, default=1, help='untimed steps first (JAX compiles)')
  parser.add_argument('--rounds', type=int, default=1,
                      help='passes over the implementations, each --warmup + --steps steps in a '
                           'fresh process; every second pass in reverse order')
  parser.add_argument('--torch-attention', default='sdpa',
                      help=f'comma list of {ATTENTIONS}: one PyTorch row each')
  parser.add_argument('--torch-threads', type=int, default=0,
                      help='torch.set_num_threads (0: leave PyTorch default)')
  parser.add_argument('--no-torch', action='store_true', help='time JAX only')
  parser.add_argument('--no-check', action='store_true',
                      help='skip the same-params logits check before timing')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--precision', default='fp32', choices=tuple(model.PRECISIONS),
                      help='JAX model.precision: fp32, tf32 (GPU/TPU), bf16 compute (torch: fp32)')
  parser.add_argument('--jax-attention', default='fused,explicit',
                      help=f'comma list of {model.ATTENTIONS} (model.attention): one JAX row each; '
                           'the first is the one in the "ratio JAX / torch" lines (default: fused, '
                           "what the :paper configs use)")
  parser.add_argument('--jax-qkv', default='one_matmul',
                      help=f'comma list of {model.QKV_FORMS} (model.qkv): each JAX attention row '
                           'once per form; the first form is the one in the "ratio JAX / torch" '
                           'lines (default: one_matmul, the model default)')
  parser.add_argument('--no-floor', action='store_true',
                      help='skip the peak-matmul measurement and the FLOP-floor line')
  args = parser.parse_args()

  shape = dict(SHAPES[args.shape])
  for key in ('batch', 'seq'):
    if getattr(args, key) is not None:
      shape[key] = getattr(args, key)
  attentions = [a.strip() for a in args.torch_attention.split(',') if a.strip()]
  bad = [a for a in attentions if a not in ATTENTIONS]
  if bad or not attentions:
    parser.error(f'--torch-attention: unknown {bad}; valid: {ATTENTIONS}')
  jax_attentions = [a.strip() for a in args.jax_attention.split(',') if a.strip()]
  bad = [a for a in jax_attentions if a not in model.ATTENTIONS]
  if bad or not jax_attentions:
    parser.error(f'--jax-attention: unknown {bad}; valid: {model.ATTENTIONS}')
  jax_qkvs = [q.strip() for q in args.jax_qkv.split(',') if q.strip()]
  bad = [q for q in jax_qkvs if q not in model.QKV_FORMS]
  if bad or not jax_qkvs:
    parser.error(f'--jax-qkv: unknown {bad}; valid: {model.QKV_FORMS}')
  if min(shape['batch'], shape['seq'], args.steps, args.rounds) < 1 or args.warmup < 0:
    parser.error('--batch, --seq, --steps and --rounds must be >= 1, --warmup >= 0')

  torch = None
  if not args.no_torch:
    try:
      import torch  # pylint: disable=g-import-not-at-top,redefined-outer-name
    except ImportError as e:
      print(f'PyTorch not available ({e}); reporting JAX only. '
            'Install: pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu')
    else:
      if args.torch_threads:  # As the PyTorch workers will set it (for the printout).
        torch.set_num_threads(args.torch_threads)

  print('\n'.join(_machine(torch)))
  B, T = shape['batch'], shape['seq']
  print(f"shape '{args.shape}': {shape['n_layers']} layers, {shape['n_heads']} heads x "
        f"d_head {shape['d_head']}, width {shape['d_model']}, MLP {shape['d_mlp']}, "
        f"vocab {shape['vocab']}; batch {B} x seq {T} = {B * T} tokens/step; "
        f'JAX {args.precision}, no dropout, '
        f'clip 1.0 + AdamW; {args.warmup} warm-up + {args.steps} timed steps, one '
        f'implementation at a time in a process of its own, {args.rounds} round(s)')

  rng = np.random.default_rng(args.seed)
  data_BxT1 = rng.integers(0, shape['vocab'], size=(B, T + 1), dtype=np.int64)

  # One implementation at a time, each in a process of its own (_Worker) that ends before
  # the next starts. With all of them in one process (round-robin, as this script timed
  # before), their step buffers (7 GB of a JAX step at the paper shape) made page faults
  # take whole steps on this VM: a step's system time rose to 10-25 s, the 2-device JAX
  # median to 11.5 s against 2.3 s (ratio 0.31x beside runs of 1.76x and 2.09x); one model
  # in a process never showed it, and all of them in processes at once do not fit in 24 GB.
  mesh = train.batch_mesh(B)
  specs = {}  # name -> the worker's build arguments
  jax_names = []
  for qkv, attention in ((q, a) for q in jax_qkvs for a in jax_attentions):
    jax_names.append(f'jax ({attention})' if qkv == jax_qkvs[0] else f'jax ({attention}, {qkv})')
    specs[jax_names[-1]] = dict(kind='jax', attention=attention, qkv=qkv, mesh=False)
  if mesh is not None:  # The first row as the PCFG study pretrains: split over the devices.
    name = f'jax ({jax_attentions[0]}, {mesh.size} dev)'
    jax_names.insert(0, name)
    specs = {name: dict(kind='jax', attention=jax_attentions[0], qkv=jax_qkvs[0], mesh=True),
             **specs}
  check = None
  if torch is not None:
    for attention in attentions:
      specs[f'torch ({attention})'] = dict(kind='torch', attention=attention,
                                           threads=args.torch_threads)
    if not args.no_check:  # Our first model's logits, which each PyTorch row must reproduce.
      config = jax_config(shape, args.precision, jax_attentions[0], jax_qkvs[0])
      params = jax.device_get(model.init_params(config, jax.random.key(args.seed)))
      tokens = data_BxT1[:2, :-1]
      check = (params, tokens,
               np.asarray(model.run_with_cache(config, params, jnp.asarray(tokens))[0]))
  common = dict(shape=shape, steps=args.warmup + args.steps, seed=args.seed,
                precision=args.precision, data=data_BxT1)
  emb = shape['vocab'] * shape['d_model'] + T * shape['d_model']
  jax_name, jax_flops = jax_names[0], None
  first, losses_seen, n_params = {}, {}, {}
  times = {name: [] for name in specs}
  cpu_times = {name: [] for name in specs}  # Less moved by other processes than the wall.
  for r in range(args.rounds):
    for name in (list(specs) if r % 2 == 0 else list(specs)[::-1]):
      # Only a PyTorch worker checks logits: the JAX ones need not receive the params.
      worker = _Worker(name, dict(common, **specs[name],
                                  check=check if specs[name]['kind'] == 'torch' else None))
      if r == 0:
        n_params[name] = n = worker.ready['n_params']
        print(f'params {name}: {n:,} ({n - emb:,} without token/position embeddings)')
        if 'diff' in worker.ready:
          diff = worker.ready['diff']
          print(f'check {name} with the JAX params: max |logit diff| = {diff:.2e} '
                f"on 2 x {T} tokens ({'OK' if diff < 1e-3 else 'MISMATCH'})")
      for i in range(args.warmup + args.steps):
        seconds, loss, cpu = worker.step()
        if r == 0:
          losses_seen.setdefault(name, []).append(loss)
          if i == 0 and args.warmup:
            first[name] = seconds
        if i >= args.warmup:
          times[name].append(seconds)
          cpu_times[name].append(cpu)
      if name == jax_name and jax_flops is None and not args.no_floor:
        jax_flops = worker.call('flops')
      worker.close()
  if len(specs) > 1:
    print('param counts equal' if len(set(n_params.values())) == 1 else 'PARAM COUNTS DIFFER')

  print('load average after (1/5/15 min): %.2f %.2f %.2f' % os.getloadavg())
  medians = {k: statistics.median(v) for k, v in times.items()}
  tps = {k: B * T / m for k, m in medians.items()}
  header = (f"{'implementation':<22} {'1st step s':>10} {'median s/step':>13} {'min':>7} "
            f"{'max':>7} {'cpu s/step':>10} {'tokens/s':>9}  losses (first..last)")
  print(header)
  print('-' * len(header))
  for name in specs:
    v = times[name]
    f = f'{first[name]:>10.2f}' if name in first else f"{'-':>10}"
    print(f'{name:<22} {f} {medians[name]:>13.3f} {min(v):>7.3f} {max(v):>7.3f} '
          f'{statistics.median(cpu_times[name]):>10.2f} {tps[name]:>9.0f}  '
          f'{losses_seen[name][0]:.3f}..{losses_seen[name][-1]:.3f}')
  for name in specs:
    if name not in jax_names:
      print(f'ratio JAX / {name} tokens/s: {tps[jax_name] / tps[name]:.2f}x  (JAX = {jax_name})')
  for other in jax_names[1:]:
    print(f'ratio {jax_name} / {other} tokens/s: {tps[jax_name] / tps[other]:.2f}x')
    for name in specs:
      if name not in jax_names:
        print(f'ratio {other} / {name} tokens/s: {tps[other] / tps[name]:.2f}x')
  for on_device, where in ((False, 'on the host'), (True, 'on the device (data.on_device)')):
    data_s, data_batch = data_seconds(args.shape, on_device)
    print(f'data: one PCFG pretraining batch ({data_batch} sequences, configs/pcfg_study.py at '
          f'this scale) takes {data_s * 1e3:.2f} ms {where} = {data_s / medians[jax_name]:.1%} '
          'of the JAX step; the train loop makes it while the previous step runs (async '
          'dispatch)')
  if not args.no_floor:
    peak = machine.matmul_flops_per_s(precision=args.precision)
    print(machine.floor_line(f'JAX step ({args.precision})', jax_flops,
                             medians[jax_name], peak))


if __name__ == '__main__':
  machine.ensure_fast_allocator()  # The launcher's allocator: same speed as a run.
  main()
