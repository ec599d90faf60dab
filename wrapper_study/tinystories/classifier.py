"""Local story-feature classifier: scores generations for the Twist generation score.

The paper scored generations with a GPT-3.5 model fine-tuned through the
OpenAI API (92% held-out accuracy). Here: logistic regression on hashed,
binary unigram + bigram counts of the lower-cased story (rows L2-normalised),
trained on stories labelled by their Features line, fitted with L-BFGS from
zero weights (deterministic). The seed salts the hash (so different seeds give
different collision patterns) and draws held-out splits.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from typing import Sequence

import numpy as np
import scipy.optimize
import scipy.sparse

from wrapper_study import progress

N_FEATURES = 1 << 18
_TOKEN = re.compile(r"[a-z']+|[^\sa-z']")  # Words, and each punctuation mark (quotes mark dialogue).


def _grams(text: str) -> list[str]:
  tokens = _TOKEN.findall(text.lower())
  return tokens + [f'{a} {b}' for a, b in zip(tokens, tokens[1:])]


def hashed_features(texts: Sequence[str], n_features: int, salt: int) -> scipy.sparse.csr_matrix:
  """[N, n_features] binary n-gram indicators, rows L2-normalised."""
  grams = [_grams(text) for text in texts]
  # Hash each distinct n-gram once: stories share most of theirs.
  bucket = {g: zlib.crc32(f'{salt}:{g}'.encode()) % n_features for g in set().union(*grams)}
  rows, cols = [], []
  for i, text_grams in enumerate(grams):
    ids = sorted({bucket[g] for g in text_grams})
    rows += [i] * len(ids)
    cols += ids
  x = scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(texts), n_features))
  norms = np.sqrt(np.asarray(x.sum(axis=1)).ravel())  # Binary entries: |row|^2 = nnz.
  return scipy.sparse.diags(1.0 / np.maximum(norms, 1.0)) @ x


@dataclasses.dataclass(frozen=True)
class StoryClassifier:
  """p(feature | story) = sigmoid(x . w + b)."""
  w: np.ndarray  # [n_features] float64.
  b: float
  salt: int
  feature: str = 'Twist'

  @property
  def n_features(self) -> int:
    return self.w.shape[0]

  def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
    """[N] probability that each story has the feature."""
    x = hashed_features(list(texts), self.n_features, self.salt)
    return 1.0 / (1.0 + np.exp(-(x @ self.w + self.b)))

  def predict(self, texts: Sequence[str]) -> np.ndarray:
    return self.predict_proba(texts) > 0.5

  def accuracy(self, texts: Sequence[str], labels: Sequence[bool]) -> float:
    return float(np.mean(self.predict(texts) == np.asarray(labels, bool)))

  def save(self, path: str) -> str:
    """Writes an .npz (path should end in .npz); returns path."""
    np.savez(path, w=self.w, b=self.b, salt=self.salt, feature=self.feature)
    return path

  @classmethod
  def load(cls, path: str) -> StoryClassifier:
    with np.load(path) as f:
      return cls(w=f['w'], b=float(f['b']), salt=int(f['salt']), feature=str(f['feature']))


def train_classifier(stories: Sequence[str], labels: Sequence[bool], seed: int = 0,
                     feature: str = 'Twist', n_features: int = N_FEATURES,
                     l2: float = 1e-3, max_iter: int = 500) -> StoryClassifier:
  """Fits L2-regularised logistic regression (bias not regularised) on the stories."""
  y = np.asarray(labels, np.float64)
  if len(stories) != len(y) or len(y) == 0:
    raise ValueError(f'train_classifier needs as many labels as stories, got {len(stories)} '
                     f'stories and {len(y)} labels.')
  if y.min() == y.max():
    raise ValueError(f'train_classifier labels are all {bool(y[0])}; both classes are needed.')
  x = hashed_features(list(stories), n_features, seed)
  # Only columns seen in training can get weight (the L2 term keeps the rest at
  # 0 from a zero start), so optimise over those alone: same optimum, and
  # L-BFGS works in thousands of dimensions instead of n_features.
  active = np.unique(x.indices)
  x = x[:, active].tocsr()
  x_t = x.T.tocsr()

  def loss_and_grad(theta):
    w, b = theta[:-1], theta[-1]
    z = x @ w + b
    # mean softplus(z) - y z, stably; d/dz = sigmoid(z) - y.
    loss = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w
    r = (1.0 / (1.0 + np.exp(-z)) - y) / len(y)
    return loss, np.concatenate([x_t @ r + l2 * w, [r.sum()]])

  theta0 = np.zeros(len(active) + 1)
  bar = progress.Progress('classifier: L-BFGS iterations (at most; ETA an upper bound)', max_iter)
  res = scipy.optimize.minimize(loss_and_grad, theta0, jac=True, method='L-BFGS-B',
                                options={'maxiter': max_iter}, callback=lambda _: bar.update())
  w = np.zeros(n_features)
  w[active] = res.x[:-1]
  return StoryClassifier(w=w, b=float(res.x[-1]), salt=seed, feature=feature)


def held_out_accuracy(stories: Sequence[str], labels: Sequence[bool], seed: int = 0,
                      test_fraction: float = 0.2, **train_kwargs) -> dict:
  """Trains on a seeded (1 - test_fraction) of the stories, scores the rest.

  Returns accuracy, balanced_accuracy (mean of the two class recalls; chance
  is 0.5 whatever the class balance), majority_baseline (accuracy of always
  answering the majority class) and n_train / n_test.
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction!r}.')
  y = np.asarray(labels, bool)
  perm = np.random.default_rng(seed).permutation(len(y))
  n_test = max(1, int(round(test_fraction * len(y))))
  test, train = perm[:n_test], perm[n_test:]
  clf = train_classifier([stories[i] for i in train], y[train], seed=seed, **train_kwargs)
  pred = clf.predict([stories[i] for i in test])
  y_test = y[test]
  recalls = [np.mean(pred[y_test == c] == c) for c in (False, True) if np.any(y_test == c)]
  return dict(accuracy=float(np.mean(pred == y_test)), balanced_accuracy=float(np.mean(recalls)),
              majority_baseline=float(max(y_test.mean(), 1 - y_test.mean())),
              n_train=int(len(train)), n_test=int(n_test))
