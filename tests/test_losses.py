"""losses.argmax is jnp.argmax (first maximum, first NaN), and accuracy counts with it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wrapper_study import losses


def _cases():
  rng = np.random.default_rng(0)
  plain = rng.normal(size=(4, 7, 13)).astype(np.float32)
  ties = np.round(plain * 2) / 2  # Many rows with two or more equal maxima.
  constant = np.zeros((3, 5), np.float32)  # Every index ties: the first, 0.
  infs = np.array([[-np.inf] * 4, [1.0, np.inf, np.inf, 0.0], [np.inf, -np.inf, 2.0, np.inf]],
                  np.float32)
  nans = plain.copy()
  nans[0, 1, 5] = np.nan
  nans[0, 1, 2] = np.nan  # The first NaN of the row wins, as numpy's argmax.
  nans[2, 3, 0] = np.nan
  return {'plain': plain, 'ties': ties, 'constant': constant, 'infs': infs, 'nans': nans,
          'one_class': plain[..., :1], 'wide': rng.normal(size=(2, 300)).astype(np.float32)}


@pytest.mark.parametrize('name', sorted(_cases()))
def test_argmax_is_jnp_argmax(name):
  x = _cases()[name]
  got = np.asarray(jax.jit(losses.argmax)(jnp.asarray(x)))
  np.testing.assert_array_equal(got, np.asarray(jnp.argmax(x, axis=-1)))
  np.testing.assert_array_equal(got, np.argmax(x, axis=-1))
  assert got.dtype == np.int32


def test_accuracy_counts_first_maximum_on_ties():
  logits = jnp.array([[[1.0, 3.0, 3.0], [0.0, 0.0, 5.0], [2.0, 1.0, 2.0]]])
  # Row 0 ties at 1 and 2 (argmax 1), row 2 ties at 0 and 2 (argmax 0).
  targets = jnp.array([[2, 2, 0]])
  assert float(losses.accuracy(logits, targets)) == pytest.approx(2 / 3)
  weights = jnp.array([[1.0, 0.0, 0.0]])  # Only the tied row whose target is not first.
  assert float(losses.accuracy(logits, targets, weights)) == 0.0
