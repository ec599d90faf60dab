"""What the TinyStories study measures on a model: the Twist-story loss and the twist fraction.

The twist fraction (the paper's generation score) is the % of sampled stories
that the local Twist classifier, fitted here on the pretraining split, calls
Twist. Its held-out accuracy is reported beside the paper's GPT-3.5 classifier.
"""

from __future__ import annotations

import functools
import pathlib
import time
from typing import Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from wrapper_study import metrics
from wrapper_study import model as model_lib
from wrapper_study import sampling
from wrapper_study.tinystories import classifier as classifier_lib
from wrapper_study.tinystories import data
from wrapper_study.tinystories import model as ts_model
from wrapper_study.tinystories.paper import PAPER_CLASSIFIER_ACCURACY


def fit_classifier(config, workdir: pathlib.Path, world: data.World) -> None:
  """The Twist classifier (saved, reused) and its held-out accuracy on the test split."""
  path = pathlib.Path(workdir) / 'classifier' / 'classifier.npz'
  train_ex = world.splits.pretrain[:config.classifier.n_train or None]
  if path.exists():
    clf = classifier_lib.StoryClassifier.load(str(path))
  else:
    logging.info('classifier: training on %d stories', len(train_ex))
    clf = classifier_lib.train_classifier([ex.story for ex in train_ex],
                                          [ex.has(world.feature) for ex in train_ex],
                                          seed=config.seed, feature=world.feature)
    path.parent.mkdir(parents=True, exist_ok=True)
    clf.save(str(path))
  test_ex = world.splits.test[:config.classifier.n_test or None]
  y = np.array([ex.has(world.feature) for ex in test_ex])
  pred = clf.predict([ex.story for ex in test_ex])
  recalls = [float(np.mean(pred[y == c] == c)) for c in (False, True) if np.any(y == c)]
  logging.info('classifier: %.1f%% held-out accuracy on %d stories',
               100 * float(np.mean(pred == y)), len(test_ex))
  world.clf = clf
  world.clf_scores = dict(
      accuracy=100 * float(np.mean(pred == y)), balanced_accuracy=100 * float(np.mean(recalls)),
      majority_baseline=100 * float(max(y.mean(), 1 - y.mean())), n_train=len(train_ex),
      n_test=len(test_ex), paper_accuracy=PAPER_CLASSIFIER_ACCURACY)


@functools.lru_cache(maxsize=None)
def _story_nll_fn(cfg: model_lib.TransformerConfig):
  """jit: (params, inputs, targets, mask) -> (sum of masked nll, sum of mask).

  Sums, not a mean (losses.next_token_loss_fn): chunks of the test set add up exactly.
  """
  def nll(params, inputs_BxT, targets_BxT, mask_BxT):
    # Right-padded rows: the causal mask hides the trailing pads; positions are exact.
    logits_BxTxV, _ = model_lib.Transformer(cfg).apply({'params': params}, inputs_BxT)
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32))
    nll_BxT = -jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
    return (nll_BxT * mask_BxT).sum(), mask_BxT.sum()
  return jax.jit(nll)


class Evaluator:
  """The Twist-story loss and the generation score of a model's params."""

  def __init__(self, config, world: data.World, seed: int = 0):
    self.config, self.world, self.seed = config, world, seed  # seed: the replicate's.
    self.cfg = ts_model.model_config(config)

  def story_loss(self, params) -> float:
    """Mean nll per story token of the test-split feature stories (instructions given)."""
    a, B = self.world.loss_arrays, self.config.eval.batch_size
    fn = _story_nll_fn(self.cfg)
    total, count = 0.0, 0.0
    for i in range(0, len(a.inputs_NxT), B):
      chunk = [x[i:i + B] for x in (a.inputs_NxT, a.targets_NxT, a.mask_NxT)]
      pad = B - len(chunk[0])
      if pad:  # One shape for every chunk: one compile.
        chunk = [np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) for x in chunk]
      s, n = fn(params, *chunk)
      total, count = total + float(s), count + float(n)
    return total / count

  def generations(self, params, point: int) -> list[str]:
    """Stories sampled after the prompts; the rng depends on the replicate's seed and the point,
    not the model (every model of a replicate is scored on the same draws)."""
    p, e = self.world.prompts, self.config.eval
    rng = jax.random.fold_in(jax.random.key(self.seed), 7000 + point)
    bos = self.world.tok.bos_id
    out_BxN = np.asarray(sampling.generate(self.cfg, params, p.tokens_NxP, p.mask_NxP,
                                           e.max_new_tokens, rng, temperature=e.temperature,
                                           eos_id=bos))
    texts = []
    for row in out_BxN:
      stop = np.flatnonzero(row == bos)
      texts.append(self.world.tok.decode(row[:stop[0]] if stop.size else row).strip())
    return texts

  def twist_fraction(self, params, point: int, save_as: Optional[pathlib.Path] = None) -> float:
    """% of generations the classifier calls the feature (the paper's generation score)."""
    t0 = time.monotonic()
    logging.info('generating %d stories of up to %d tokens (iteration %d) ...',
                 len(self.world.prompts.tokens_NxP), self.config.eval.max_new_tokens, point)
    texts = self.generations(params, point)
    pred = self.world.clf.predict(texts)
    logging.info('... %.0f%% with a twist (took %s)', 100.0 * float(np.mean(pred)),
                 metrics.format_duration(time.monotonic() - t0))
    if save_as is not None:
      save_as.parent.mkdir(parents=True, exist_ok=True)
      save_as.write_text('\n\n'.join(f'[{"TWIST" if y else "no twist"}] {t}'
                                     for y, t in zip(pred, texts)))
    return 100.0 * float(np.mean(pred))

  def __call__(self, params, step: int, *, loss: bool, score: bool,
               save_as: Optional[pathlib.Path] = None) -> dict:
    """The metrics asked for at this step: {'twist_loss', 'twist_fraction'} (either or both)."""
    out = {}
    if loss:
      out['twist_loss'] = self.story_loss(params)
    if score:
      out['twist_fraction'] = self.twist_fraction(params, step, save_as=save_as)
    return out
