"""Figures people would rather look at than read: attention maps, curves.

Headless (Agg). Every function returns a matplotlib Figure; `save` writes PNG.
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from wrapper_study.report.intervals import t_quantile_975


def save(fig, path) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches='tight')
  plt.close(fig)
  return path


def attention_maps(patterns_NxLxTxT: np.ndarray, token_labels: Sequence[Sequence[str]],
                   row_titles: Sequence[str], block_titles: Optional[Sequence[str]] = None,
                   title: str = '', vmax: float = 0.5):
  """Grid of attention maps: one row per input (or model), one column per block.

  Rows are queries (attending tokens), columns keys (attended tokens), both
  labelled with the tokens, as in the paper's Figs 10 and 40-45 (colour 0-0.5).
  """
  n, n_blocks, T, _ = patterns_NxLxTxT.shape
  block_titles = block_titles or [f'Block {l}' for l in range(n_blocks)]
  cell = max(2.2, 0.16 * T)
  fig, axes = plt.subplots(n, n_blocks, figsize=(cell * n_blocks, cell * n), squeeze=False)
  for i in range(n):
    for l in range(n_blocks):
      ax = axes[i, l]
      im = ax.imshow(patterns_NxLxTxT[i, l], cmap='viridis', vmin=0, vmax=vmax)
      ax.set_xticks(range(T))
      ax.set_yticks(range(T))
      ax.set_xticklabels(token_labels[i], fontsize=6)
      ax.set_yticklabels(token_labels[i], fontsize=6)
      ax.set_title(f'{row_titles[i]}\n{block_titles[l]}' if l == 0 else block_titles[l], fontsize=8)
      if l == 0:
        ax.set_ylabel('attending token', fontsize=7)
      ax.set_xlabel('attended token', fontsize=7)
  fig.colorbar(im, ax=axes, shrink=0.6, label='attention')
  if title:
    fig.suptitle(title)
  return fig


def activation_map(acts_NxTxM: np.ndarray, token_labels: Sequence[Sequence[str]],
                   row_titles: Sequence[str], channels: Optional[slice] = None, title: str = ''):
  """MLP activations (tokens x channels) per input/model, as the paper's Figs 46, 53."""
  n = acts_NxTxM.shape[0]
  channels = channels or slice(0, acts_NxTxM.shape[-1])
  fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 0.14 * acts_NxTxM.shape[1] + 1.5), squeeze=False)
  for i in range(n):
    ax = axes[0, i]
    a = acts_NxTxM[i][:, channels]
    ax.imshow(a, cmap='magma', aspect='auto')
    ax.set_yticks(range(len(token_labels[i])))
    ax.set_yticklabels(token_labels[i], fontsize=6)
    ax.set_xlabel(f'channel {channels.start}..{channels.stop - 1}', fontsize=7)
    ax.set_title(row_titles[i], fontsize=8)
  if title:
    fig.suptitle(title)
  return fig


def curves(x, series: dict, xlabel: str, ylabel: str, title: str = '', logx: bool = False,
           bands: Optional[dict] = None, ylim=None):
  """Line plot of named series; `bands` maps a name to (low, high) arrays."""
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, y in series.items():
    line, = ax.plot(x, y, label=name, marker='.' if len(x) < 30 else None)
    if bands and name in bands:
      lo, hi = bands[name]
      ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
  if logx:
    ax.set_xscale('symlog', linthresh=1)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if ylim:
    ax.set_ylim(*ylim)
  if title:
    ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  return fig


def seed_band(values_SxX):
  """(mean [X], (low [X], high [X])): a 95% t confidence interval over seeds (axis 0)."""
  v = np.asarray(values_SxX, float)  # NaN: a diverged seed, left out (not drawn as 0%).
  with np.errstate(invalid='ignore'), warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)  # An all-NaN column stays NaN: no line.
    n = np.isfinite(v).sum(0)
    mean = np.nanmean(v, 0)
    if len(v) < 2:
      return mean, (mean, mean)
    sd = np.where(n > 1, np.nanstd(v, 0, ddof=1), 0.0)
    half = np.array([t_quantile_975(int(k) - 1) for k in np.ravel(n)]).reshape(n.shape) * sd
    half = half / np.sqrt(np.maximum(n, 1))
  return mean, (mean - half, mean + half)


def grouped_curves(x, values_XxP, members, *, panel, group, ylabel: str, xlabel: str,
                   title: str = '', logx: bool = False, ylim=(-3, 103), rows=None):
  """One panel per panel(member) (per rows(member) row, if given), one line per
  group(member), mean and 95% band over the members that share both (the seeds).

  values_XxP: a metric at each x for every member (columns follow `members`).
  """
  values_XxP = np.asarray(values_XxP, float)
  row_of = rows or (lambda m: '')
  row_names = sorted({row_of(m) for m in members}, key=str)
  panels = sorted({panel(m) for m in members}, key=str)
  fig, axes = plt.subplots(len(row_names), len(panels), figsize=(3.3 * len(panels),
                           2.7 * len(row_names)), squeeze=False)
  for r, rname in enumerate(row_names):
    for c, pname in enumerate(panels):
      ax = axes[r, c]
      sel = [i for i, m in enumerate(members) if panel(m) == pname and row_of(m) == rname]
      for gname in sorted({group(members[i]) for i in sel}, key=str):
        idx = [i for i in sel if group(members[i]) == gname]
        mean, (lo, hi) = seed_band(values_XxP[:, idx].T)
        line, = ax.plot(x, mean, label=f'{gname} (n={len(idx)})', marker='.' if len(x) < 30
                        else None)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
      if logx:
        ax.set_xscale('symlog', linthresh=1)
      if ylim:
        ax.set_ylim(*ylim)
      ax.set_title(' '.join(str(s) for s in (rname, pname) if s != ''), fontsize=8)
      ax.set_xlabel(xlabel, fontsize=8)
      ax.set_ylabel(ylabel, fontsize=8)
      ax.grid(alpha=0.3)
      if sel:
        ax.legend(fontsize=6)
  fig.suptitle(f'{title} (mean and 95% t-interval over seeds)', fontsize=10)
  fig.tight_layout()
  return fig
