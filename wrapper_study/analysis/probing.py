"""Linear probes on the residual stream, every block at once (paper App. D).

A probe reads one site's activation at the answer position and predicts a class
index (e.g. the count of `a`). Sites are B0 = embeddings (token + position,
`blocks.0.hook_resid_pre`) and Bl = `blocks.{l-1}.hook_resid_post`, l = 1..L.

The paper's probe outputs the vocabulary; here it outputs the n_classes answer
values (counts 0..O'), which is the same linear read-out restricted to the
answers that can occur: argmax over the restricted logits can only differ from
the full read-out by ruling out tokens that are never correct.

Two ways to fit, both for all sites and all targets in one jitted computation:
  'adamw'        the paper protocol: cross-entropy, AdamW, lr 1e-3 multiplied
                 by 0.1 at steps 2000, 3000 and 3500 of 4000. vmapped over sites
                 and targets, lax.scan over steps inside.
  'closed_form'  ridge least squares on one-hot targets with an unregularised
                 bias, argmax read-out. Seconds instead of minutes; a cheap check
                 that the information is linearly there.

A binary probe (TinyStories features) is n_classes=2: two softmax logits are one
logit (their difference) plus a bias, i.e. the paper's BCE probe with a bias.

Shapes: S sites, N samples, T sequence (or targets, in labels_TxN), D width,
C classes, B minibatch.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wrapper_study import model as model_lib

METHODS = ('adamw', 'closed_form')

# Feature columns with a smaller train std are left unscaled (constant columns,
# e.g. unused residual dimensions of a Tracr model).
_MIN_STD = 1e-6

Positions = Union[int, np.ndarray, jax.Array]


# ----------------------------------------------------------------------------- sites

def _check_layers(cfg: model_lib.TransformerConfig, layers: Optional[Sequence[int]]) -> list[int]:
  L = cfg.n_layers
  if layers is None:
    return list(range(L + 1))
  layers = list(layers)
  bad = [l for l in layers
         if isinstance(l, bool) or not isinstance(l, (int, np.integer)) or not 0 <= l <= L]
  if bad or not layers:
    raise ValueError(f'layers={layers} is invalid: give site indices in 0..{L} '
                     f'(0 = embeddings B0, l = output of block l-1, i.e. B{L} is the last).')
  if len(set(layers)) != len(layers):
    raise ValueError(f'layers={layers} repeats a site; valid: distinct values in 0..{L}.')
  return [int(l) for l in layers]


def probe_sites(cfg: model_lib.TransformerConfig,
                layers: Optional[Sequence[int]] = None) -> list[str]:
  """Hook names of sites B0..BL (or the `layers` subset, in the order given)."""
  return [('blocks.0.hook_resid_pre' if l == 0 else f'blocks.{l - 1}.hook_resid_post')
          for l in _check_layers(cfg, layers)]


def site_labels(cfg: model_lib.TransformerConfig,
                layers: Optional[Sequence[int]] = None) -> list[str]:
  """['B0', ..., 'BL'] (or the `layers` subset), the paper's figure labels."""
  return [f'B{l}' for l in _check_layers(cfg, layers)]


# ----------------------------------------------------------------------------- features

def mean_last_k_weights(valid_NxT, k: int = 10) -> np.ndarray:
  """[N, T] weights: 1/k on the last k valid positions of each row.

  The TinyStories probe input, "an average of the activations at the final 10
  token positions of the story": pass the story mask (True on story tokens,
  False on padding and instructions). Rows with fewer than k valid tokens
  average the ones they have.
  """
  valid_NxT = np.asarray(valid_NxT).astype(bool)
  if valid_NxT.ndim != 2:
    raise ValueError(f'valid_NxT must be [N, T], got shape {valid_NxT.shape}.')
  if k < 1:
    raise ValueError(f'k must be >= 1, got {k}.')
  rank_from_end_NxT = np.cumsum(valid_NxT[:, ::-1], axis=1)[:, ::-1]
  w_NxT = (valid_NxT & (rank_from_end_NxT <= k)).astype(np.float32)
  empty = np.flatnonzero(w_NxT.sum(1) == 0)
  if empty.size:
    raise ValueError(f'valid_NxT rows {empty[:5].tolist()} have no valid position.')
  return w_NxT / w_NxT.sum(1, keepdims=True)


def _positions_as_index_or_weights(positions, N: int, T: int, pad_mask_NxT, set_name: str):
  """('index', int32 [N]) or ('weights', float32 [N, T] rows summing to 1)."""
  arr = np.asarray(positions)
  if arr.dtype.kind in 'iu':
    idx_N = np.broadcast_to(arr, (N,)) if arr.ndim == 0 else arr
    if idx_N.shape != (N,):
      raise ValueError(f'positions must be an int, an int array [N={N}] or weights [N, T]='
                       f'[{N}, {T}] for {set_name}; got shape {arr.shape}.')
    if idx_N.min() < -T or idx_N.max() >= T:
      raise ValueError(f'positions must lie in -{T}..{T - 1} for {set_name} '
                       f'(T={T}); got {idx_N.min()}..{idx_N.max()}.')
    idx_N = np.where(idx_N < 0, idx_N + T, idx_N).astype(np.int32)
    if pad_mask_NxT is not None and not pad_mask_NxT[np.arange(N), idx_N].all():
      raise ValueError(f'positions point at padding (pad_mask_NxT False) in {set_name}.')
    return 'index', idx_N
  if arr.dtype.kind in 'fb':
    w_NxT = arr.astype(np.float32)
    if w_NxT.shape != (N, T):
      raise ValueError(f'positions given as weights must be [N, T]=[{N}, {T}] for '
                       f'{set_name}; got shape {w_NxT.shape}.')
    if not np.all(np.isfinite(w_NxT)) or (w_NxT < 0).any():
      raise ValueError(f'position weights for {set_name} must be finite and >= 0.')
    row_sum_N = w_NxT.sum(1)
    if (row_sum_N <= 0).any():
      raise ValueError(f'position weights rows {np.flatnonzero(row_sum_N <= 0)[:5].tolist()} '
                       f'of {set_name} sum to 0; every row needs a positive weight.')
    if pad_mask_NxT is not None and (w_NxT[~pad_mask_NxT] > 0).any():
      raise ValueError(f'position weights put mass on padding (pad_mask_NxT False) '
                       f'in {set_name}.')
    return 'weights', w_NxT / row_sum_N[:, None]
  raise ValueError(f'positions must be an int, an int array [N] or float weights [N, T]; '
                   f'got dtype {arr.dtype}.')


@functools.partial(jax.jit, static_argnames=('cfg', 'sites', 'kind'))
def _site_features(cfg, params, tokens_BxT, pad_mask_BxT, where, *, sites, kind):
  """[S, B, D] activations of `sites`, reduced over positions inside the jit.

  Only `sites` are cached; anything downstream of the last site (later blocks,
  the unembedding) is dead code that XLA drops.
  """
  _, cache = model_lib.run_with_cache(cfg, params, tokens_BxT, names=sites,
                                      pad_mask_BxT=pad_mask_BxT)
  out = []
  for name in sites:
    x_BxTxD = cache[name]
    if kind == 'index':
      out.append(jnp.take_along_axis(x_BxTxD, where[:, None, None], axis=1)[:, 0])
    else:  # Full precision: a mean over 10 positions should not go through TF32.
      out.append(jnp.einsum('btd,bt->bd', x_BxTxD, where,
                            precision=jax.lax.Precision.HIGHEST))
  return jnp.stack(out)


def collect_features(cfg: model_lib.TransformerConfig, params, tokens_NxT, positions: Positions,
                     *, sites: Optional[Sequence[str]] = None, batch_size: int = 512,
                     pad_mask_NxT=None, set_name: str = 'tokens_NxT') -> np.ndarray:
  """[S, N, D] probe inputs: each site's activation at `positions`, float32.

  Args:
    cfg, params: the frozen model.
    tokens_NxT: int token ids, one row per sample.
    positions: an int (the same position in every row; negative counts from
      the end), an int array [N] (one position per row), or float weights
      [N, T] (weighted mean over positions; rows are normalised to sum 1).
    sites: hook names (default `probe_sites(cfg)`, B0..BL). Each must be a
      [B, T, D] activation with the same D.
    batch_size: rows per jitted forward. The last chunk is padded to this size
      so one compilation serves every chunk.
    pad_mask_NxT: True on real tokens; passed to the model as the key mask.
    set_name: what the rows are (e.g. 'probe test set'), for error messages.
  """
  sites = tuple(probe_sites(cfg) if sites is None else model_lib.resolve_names(cfg, sites))
  if not sites:
    raise ValueError('sites is empty; pass hook names or None for B0..BL.')
  tokens_NxT = np.asarray(tokens_NxT)
  if tokens_NxT.ndim != 2 or tokens_NxT.shape[0] == 0 or tokens_NxT.shape[1] == 0:
    raise ValueError(f'{set_name} is empty or not [N, T] (shape {tokens_NxT.shape}); '
                     f'probing needs at least one row of tokens.')
  if tokens_NxT.dtype.kind not in 'iu':
    raise ValueError(f'{set_name} must hold integer token ids, got dtype {tokens_NxT.dtype}.')
  N, T = tokens_NxT.shape
  if T > cfg.max_len:
    raise ValueError(f'{set_name} has T={T} positions but model.max_len={cfg.max_len}.')
  if tokens_NxT.min() < 0 or tokens_NxT.max() >= cfg.vocab_size:
    raise ValueError(f'{set_name} token ids must lie in 0..{cfg.vocab_size - 1}; '
                     f'got {tokens_NxT.min()}..{tokens_NxT.max()}.')
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  if pad_mask_NxT is not None:
    pad_mask_NxT = np.asarray(pad_mask_NxT).astype(bool)
    if pad_mask_NxT.shape != (N, T):
      raise ValueError(f'pad_mask_NxT must be [N, T]=[{N}, {T}], got {pad_mask_NxT.shape}.')
  kind, where = _positions_as_index_or_weights(positions, N, T, pad_mask_NxT, set_name)

  # Catch non-residual sites (attention patterns, MLP hidden units of another
  # width) before any compute.
  shapes = jax.eval_shape(
      lambda p, t: model_lib.run_with_cache(cfg, p, t, names=sites)[1], params,
      jax.ShapeDtypeStruct((1, T), jnp.int32))
  widths = {name: s.shape[-1] for name, s in shapes.items()}
  bad = [name for name, s in shapes.items() if s.ndim != 3]
  if bad or len(set(widths.values())) != 1:
    raise ValueError(f'sites must all be [B, T, D] activations of one width; got '
                     f'{ {n: tuple(s.shape) for n, s in shapes.items()} }.')

  B = min(batch_size, N)
  chunks = []
  for start in range(0, N, B):
    stop = min(start + B, N)
    pad = B - (stop - start)  # Pad the last chunk: same shapes, no recompile.
    pad_rows = lambda a, fill: np.concatenate(
        [a[start:stop], np.full((pad,) + a.shape[1:], fill, a.dtype)]) if pad else a[start:stop]
    where_B = pad_rows(where, 0 if kind == 'index' else 1.0 / T)
    mask_BxT = None if pad_mask_NxT is None else jnp.asarray(pad_rows(pad_mask_NxT, True))
    feats_SxBxD = _site_features(cfg, params, jnp.asarray(pad_rows(tokens_NxT, 0), jnp.int32),
                                 mask_BxT, jnp.asarray(where_B), sites=sites, kind=kind)
    chunks.append(np.asarray(feats_SxBxD)[:, :stop - start])
  return np.concatenate(chunks, axis=1).astype(np.float32)


# ----------------------------------------------------------------------------- config

@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  """How probes are fitted. Hashable: it is a static argument of the jitted fit."""
  method: str = 'adamw'  # One of METHODS.
  steps: int = 4000  # adamw: iterations (paper: 4K).
  lr: float = 1e-3  # adamw: max learning rate (paper: 1e-3).
  boundaries: tuple[int, ...] = (2000, 3000, 3500)  # adamw: steps where lr *= decay.
  decay: float = 0.1  # adamw: multiplier at each boundary (paper: 0.1).
  batch_size: int = 256  # adamw: rows per step (paper: silent); min(batch_size, N) used.
  # adamw: decoupled decay on weights and bias. The paper is silent; 0.01 is
  # PyTorch's AdamW default, what an unstated torch.optim.AdamW would use.
  weight_decay: float = 0.01
  ridge: float = 1e-3  # closed_form: L2 on weights (not bias), per-sample scale.
  standardize: bool = True  # Per-site feature mean/std from the TRAIN features.
  seed: int = 0  # Minibatch order.

  def __post_init__(self):
    # A list would make the config unhashable, and it is a jit static argument.
    if isinstance(self.boundaries, (list, np.ndarray)):
      object.__setattr__(self, 'boundaries', tuple(int(b) for b in self.boundaries))

  def validate(self) -> None:
    """Raises ValueError naming the field when a value cannot work."""
    if self.method not in METHODS:
      raise ValueError(f'probe.method={self.method!r} is unknown; valid: {METHODS}.')
    for name in ('steps', 'batch_size'):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f'probe.{name} must be a positive integer, got {v!r}.')
    if not self.lr > 0:
      raise ValueError(f'probe.lr must be > 0, got {self.lr}.')
    if not 0 < self.decay <= 1:
      raise ValueError(f'probe.decay must be in (0, 1], got {self.decay}.')
    b = tuple(self.boundaries)
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in b) or (
        list(b) != sorted(set(b))):
      raise ValueError(f'probe.boundaries must be strictly increasing positive steps, '
                       f'got {self.boundaries!r}.')
    if not self.weight_decay >= 0:
      raise ValueError(f'probe.weight_decay must be >= 0, got {self.weight_decay}.')
    if not self.ridge > 0:
      raise ValueError(f'probe.ridge must be > 0 (keeps the normal equations solvable), '
                       f'got {self.ridge}.')
    if not isinstance(self.seed, (int, np.integer)):
      raise ValueError(f'probe.seed must be an integer, got {self.seed!r}.')


class LinearProbes(NamedTuple):
  """S x T probes: logits = ((x - mean) / std) @ w + b."""
  w_SxTxDxC: jax.Array
  b_SxTxC: jax.Array
  mean_SxD: jax.Array  # Train-feature statistics (0 and 1 when standardize=False).
  std_SxD: jax.Array


# ----------------------------------------------------------------------------- fitting

def _feature_stats(x_NxD, standardize: bool):
  if not standardize:
    return jnp.zeros(x_NxD.shape[-1], x_NxD.dtype), jnp.ones(x_NxD.shape[-1], x_NxD.dtype)
  mean_D = x_NxD.mean(0)
  std_D = x_NxD.std(0)
  return mean_D, jnp.where(std_D > _MIN_STD, std_D, 1.0)


def _batch_indices(seed: int, steps: int, n: int, batch_size: int) -> jax.Array:
  """[steps, B] row ids: a shuffled stream of epochs, as a shuffling data loader.

  Shared by every probe (one data stream feeds all sites and targets) and by
  the loop reference, so both see the same minibatches.
  """
  B = min(batch_size, n)
  n_epochs = -(-steps * B // n)
  keys = jax.random.split(jax.random.key(seed), n_epochs)
  stream = jax.vmap(lambda k: jax.random.permutation(k, n))(keys).reshape(-1)
  return stream[:steps * B].reshape(steps, B)


def lr_schedule(cfg: ProbeConfig) -> optax.Schedule:
  """Step -> lr: cfg.lr, multiplied by cfg.decay from each boundary step on."""
  return optax.piecewise_constant_schedule(cfg.lr, {int(s): cfg.decay for s in cfg.boundaries})


def _optimizer(cfg: ProbeConfig) -> optax.GradientTransformation:
  return optax.adamw(lr_schedule(cfg), b1=0.9, b2=0.999, eps=1e-8, weight_decay=cfg.weight_decay)


def _fit_one_adamw(x_NxD, y_N, idx_StepsxB, n_classes: int, cfg: ProbeConfig):
  """One probe (standardised features, one target): (w_DxC, b_C) after cfg.steps."""
  tx = _optimizer(cfg)
  params = (jnp.zeros((x_NxD.shape[1], n_classes), x_NxD.dtype),
            jnp.zeros((n_classes,), x_NxD.dtype))  # Convex loss: zero init, no key needed.

  def loss_fn(p, x_BxD, y_B):
    logits_BxC = x_BxD @ p[0] + p[1]
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, y_B).mean()

  def step(carry, idx_B):
    p, opt_state = carry
    grads = jax.grad(loss_fn)(p, x_NxD[idx_B], y_N[idx_B])
    updates, opt_state = tx.update(grads, opt_state, p)
    return (optax.apply_updates(p, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), idx_StepsxB)
  return params


def _fit_closed_form(x_NxD, y_TxN, n_classes: int, ridge: float):
  """Ridge regression onto one-hot targets, all targets sharing one solve.

  Minimises (1/N) |[x 1] W - onehot(y)|^2 + ridge |W_x|^2 (bias unregularised).
  Returns (w_TxDxC, b_TxC).
  """
  N, D = x_NxD.shape
  xa_NxD1 = jnp.concatenate([x_NxD, jnp.ones((N, 1), x_NxD.dtype)], axis=1)
  hi = jax.lax.Precision.HIGHEST
  gram = jnp.matmul(xa_NxD1.T, xa_NxD1, precision=hi) / N
  gram = gram + ridge * jnp.diag(jnp.append(jnp.ones(D), 0.0)).astype(x_NxD.dtype)
  onehot_NxTC = jax.nn.one_hot(y_TxN.T, n_classes, dtype=x_NxD.dtype).reshape(N, -1)
  rhs = jnp.matmul(xa_NxD1.T, onehot_NxTC, precision=hi) / N
  sol_D1xTxC = jax.scipy.linalg.solve(gram, rhs, assume_a='pos').reshape(D + 1, -1, n_classes)
  return jnp.moveaxis(sol_D1xTxC[:D], 1, 0), sol_D1xTxC[D]


@functools.partial(jax.jit, static_argnames=('n_classes', 'cfg'))
def _train_all(features_SxNxD, labels_TxN, *, n_classes: int, cfg: ProbeConfig) -> LinearProbes:
  mean_SxD, std_SxD = jax.vmap(lambda x: _feature_stats(x, cfg.standardize))(features_SxNxD)
  x_SxNxD = (features_SxNxD - mean_SxD[:, None]) / std_SxD[:, None]
  if cfg.method == 'closed_form':
    w, b = jax.vmap(lambda x: _fit_closed_form(x, labels_TxN, n_classes, cfg.ridge))(x_SxNxD)
    return LinearProbes(w, b, mean_SxD, std_SxD)
  idx = _batch_indices(cfg.seed, cfg.steps, features_SxNxD.shape[1], cfg.batch_size)
  fit = functools.partial(_fit_one_adamw, idx_StepsxB=idx, n_classes=n_classes, cfg=cfg)
  over_targets = jax.vmap(fit, in_axes=(None, 0))
  w, b = jax.vmap(over_targets, in_axes=(0, None))(x_SxNxD, labels_TxN)
  return LinearProbes(w, b, mean_SxD, std_SxD)


def _as_arrays(features_SxNxD, labels_TxN):
  return jnp.asarray(features_SxNxD, jnp.float32), jnp.asarray(labels_TxN, jnp.int32)


def train_probes(features_SxNxD, labels_TxN, n_classes: int,
                 cfg: ProbeConfig = ProbeConfig()) -> LinearProbes:
  """Fits S x T probes (every site, every target) in one jitted computation."""
  cfg.validate()
  _check_set(features_SxNxD, labels_TxN, n_classes, 'features_SxNxD', 'labels_TxN')
  return _train_all(*_as_arrays(features_SxNxD, labels_TxN), n_classes=n_classes, cfg=cfg)


@functools.partial(jax.jit, static_argnames=('standardize',))
def _stats_one(x_NxD, standardize):
  return _feature_stats(x_NxD, standardize)


_fit_one_adamw_jit = jax.jit(_fit_one_adamw, static_argnames=('n_classes', 'cfg'))
_fit_closed_form_jit = jax.jit(_fit_closed_form, static_argnames=('n_classes', 'ridge'))
_batch_indices_jit = jax.jit(_batch_indices, static_argnums=(0, 1, 2, 3))


def train_probes_loop(features_SxNxD, labels_TxN, n_classes: int,
                      cfg: ProbeConfig = ProbeConfig()) -> LinearProbes:
  """Reference for `train_probes`: the same math, one site and one target at a time.

  A Python loop over jitted single-probe fits; slower, used by the tests and
  the benchmark to check and time the vmapped fit.
  """
  cfg.validate()
  _check_set(features_SxNxD, labels_TxN, n_classes, 'features_SxNxD', 'labels_TxN')
  features_SxNxD, labels_TxN = _as_arrays(features_SxNxD, labels_TxN)
  S, N, _ = features_SxNxD.shape
  idx = _batch_indices_jit(cfg.seed, cfg.steps, N, cfg.batch_size)
  ws, bs, means, stds = [], [], [], []
  for s in range(S):
    mean_D, std_D = _stats_one(features_SxNxD[s], cfg.standardize)
    x_NxD = (features_SxNxD[s] - mean_D) / std_D
    w_t, b_t = [], []
    for t in range(labels_TxN.shape[0]):
      if cfg.method == 'closed_form':
        w, b = _fit_closed_form_jit(x_NxD, labels_TxN[t:t + 1], n_classes=n_classes,
                                    ridge=cfg.ridge)
        w, b = w[0], b[0]
      else:
        w, b = _fit_one_adamw_jit(x_NxD, labels_TxN[t], idx, n_classes=n_classes, cfg=cfg)
      w_t.append(w)
      b_t.append(b)
    ws.append(jnp.stack(w_t))
    bs.append(jnp.stack(b_t))
    means.append(mean_D)
    stds.append(std_D)
  return LinearProbes(jnp.stack(ws), jnp.stack(bs), jnp.stack(means), jnp.stack(stds))


# ----------------------------------------------------------------------------- scoring

@jax.jit
def _accuracy(probe: LinearProbes, features_SxNxD, labels_TxN):
  x_SxNxD = (features_SxNxD - probe.mean_SxD[:, None]) / probe.std_SxD[:, None]
  logits_SxTxNxC = jnp.einsum('snd,stdc->stnc', x_SxNxD, probe.w_SxTxDxC) + probe.b_SxTxC[:, :, None]
  return 100.0 * (logits_SxTxNxC.argmax(-1) == labels_TxN[None]).mean(-1)


def accuracy(probe: LinearProbes, features_SxNxD, labels_TxN) -> np.ndarray:
  """[S, T] accuracy in % of every probe on (features, labels)."""
  S, T, D, C = probe.w_SxTxDxC.shape
  _check_set(features_SxNxD, labels_TxN, C, 'features_SxNxD', 'labels_TxN')
  f_shape, l_shape = np.shape(features_SxNxD), np.shape(labels_TxN)
  if (f_shape[0], f_shape[2]) != (S, D) or l_shape[0] != T:
    raise ValueError(f'features_SxNxD {f_shape} / labels_TxN {l_shape} do not match the '
                     f'probe (S={S}, D={D}, T={T}).')
  return np.asarray(_accuracy(probe, *_as_arrays(features_SxNxD, labels_TxN)))


def _check_set(features_SxNxD, labels_TxN, n_classes: int, f_name: str, l_name: str) -> None:
  """ValueError naming the argument when a feature/label set cannot be probed."""
  if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
    raise ValueError(f'n_classes must be an integer >= 2, got {n_classes!r}.')
  f_shape, l_shape = np.shape(features_SxNxD), np.shape(labels_TxN)
  if len(f_shape) != 3:
    raise ValueError(f'{f_name} must be [S, N, D], got shape {f_shape}.')
  if len(l_shape) != 2:
    raise ValueError(f'{l_name} must be [T, N] (one row per target; use labels[None] for '
                     f'one target), got shape {l_shape}.')
  if 0 in f_shape or 0 in l_shape:
    raise ValueError(f'{f_name} {f_shape} / {l_name} {l_shape} is empty; '
                     f'probing needs at least one site, sample, feature and target.')
  if f_shape[1] != l_shape[1]:
    raise ValueError(f'{f_name} has N={f_shape[1]} samples but {l_name} has N={l_shape[1]}.')
  labels = np.asarray(labels_TxN)
  if labels.dtype.kind not in 'iu':
    raise ValueError(f'{l_name} must hold integer class indices, got dtype {labels.dtype}.')
  if labels.min() < 0 or labels.max() >= n_classes:
    raise ValueError(f'{l_name} must lie in [0, n_classes={n_classes}); got '
                     f'{labels.min()}..{labels.max()}.')
  if not np.all(np.isfinite(np.asarray(features_SxNxD))):
    raise ValueError(f'{f_name} holds NaN or Inf.')


def fit_and_score(train_features_SxNxD, train_labels_TxN, test_features_SxNxD, test_labels_TxN,
                  n_classes: int, cfg: ProbeConfig = ProbeConfig()) -> np.ndarray:
  """[S, T] held-out accuracy (%) of probes fitted on the train set."""
  cfg.validate()
  _check_set(train_features_SxNxD, train_labels_TxN, n_classes,
             'train_features_SxNxD', 'train_labels_TxN')
  _check_set(test_features_SxNxD, test_labels_TxN, n_classes,
             'test_features_SxNxD', 'test_labels_TxN')
  tr_f, te_f = np.shape(train_features_SxNxD), np.shape(test_features_SxNxD)
  if (tr_f[0], tr_f[2]) != (te_f[0], te_f[2]):
    raise ValueError(f'test_features_SxNxD {te_f} must have the S and D of '
                     f'train_features_SxNxD {tr_f}.')
  tr_t, te_t = np.shape(train_labels_TxN)[0], np.shape(test_labels_TxN)[0]
  if tr_t != te_t:
    raise ValueError(f'test_labels_TxN has {te_t} targets, train_labels_TxN has {tr_t}.')
  probe = train_probes(train_features_SxNxD, train_labels_TxN, n_classes, cfg)
  return accuracy(probe, test_features_SxNxD, test_labels_TxN)
