"""Figures people would rather look at than read: attention maps, curves.

Every function returns a matplotlib Figure; `save` writes PNG. The backend is
the caller's: a notebook shows figures inline, the launcher sets Agg
(MPLBACKEND), and matplotlib falls back to Agg where there is no display.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
import warnings
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np

from wrapper_study.report.intervals import t_quantile_975


def save(fig, path, key: str = '') -> pathlib.Path:
  """Writes the figure as PNG (with `key` in its metadata, see `rendered`) and closes it."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches='tight', metadata={_KEY: key} if key else None)
  plt.close(fig)
  return path


_KEY = 'wrapper_study key'
_SOURCE = hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()[:8]


def figure_key(data_key: str, *modules) -> str:
  """The key of a figure: its data's, plus the source of this module and of the modules that
  draw it, so a change to the data or to the plotting code renders it again."""
  codes = [hashlib.sha256(pathlib.Path(m.__file__).read_bytes()).hexdigest()[:8]
           for m in modules]
  return '-'.join([data_key, _SOURCE, *codes])


def rendered(path, key: str) -> bool:
  """Whether path is a PNG this module saved with `key` (a rerun need not draw it again)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top  # Comes with matplotlib.
  try:
    with Image.open(path) as im:
      return im.text.get(_KEY) == key
  except (OSError, ValueError, AttributeError):
    return False


def save_once(make, path, data_key: str, *modules) -> pathlib.Path:
  """save(make(), path) unless path was drawn from the same data by the same code (a rerun);
  modules: those whose functions `make` calls to draw (this one is always included)."""
  key = figure_key(data_key, *modules)
  return pathlib.Path(path) if rendered(path, key) else save(make(), path, key)


TICK = 8  # pt: the smallest text on any figure.
LABEL = 9
TITLE = 11


def natural_key(label) -> tuple:
  """Sort key: the numbers in a label, as numbers, then the label ('lr=1e-04' < 'lr=0.001',
  'eta_L=0.0001' after 'eta_M=1e-06'): one lr order, ascending, in every figure."""
  nums = re.findall(r'[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?', str(label))
  return tuple(float(x) for x in nums), str(label)


def figure_legend(fig, **kwargs) -> None:
  """One legend for the whole figure (below the panels): each label once, from every panel."""
  for old in list(fig.legends):
    old.remove()
  handles = {}
  for ax in fig.axes:
    for h, label in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(label, h)
  if handles:
    fig.legend(list(handles.values()), list(handles), loc='outside lower center',
               ncol=min(len(handles), 4), fontsize=LABEL, **kwargs)


def attention_maps(patterns_NxLxTxT: np.ndarray, token_labels: Sequence[Sequence[str]],
                   row_titles: Sequence[str], block_titles: Optional[Sequence[str]] = None,
                   title: str = '', vmax: float = 0.5):
  """Grid of attention maps: one row per input (or model), one column per block.

  Rows are queries (attending tokens), columns keys (attended tokens), both
  labelled with the tokens, as in the paper's Figs 10 and 40-45 (colour 0-0.5).
  Each row is named on its left (the first column's y label), blocks on top.
  """
  n, n_blocks, T, _ = patterns_NxLxTxT.shape
  block_titles = block_titles or [f'Block {l}' for l in range(n_blocks)]
  cell = max(2.6, 0.2 * T)
  fig, axes = plt.subplots(n, n_blocks, figsize=(cell * n_blocks + 1.5, cell * n + 0.8),
                           squeeze=False, layout='constrained')
  for i in range(n):
    for l in range(n_blocks):
      ax = axes[i, l]
      im = ax.imshow(patterns_NxLxTxT[i, l], cmap='viridis', vmin=0, vmax=vmax)
      ax.set_xticks(range(T), token_labels[i], fontsize=TICK, rotation=90)
      ax.set_yticks(range(T), token_labels[i], fontsize=TICK)
      if i == 0:
        ax.set_title(block_titles[l], fontsize=LABEL + 1)
      if l == 0:
        ax.set_ylabel(f'{row_titles[i]}\n\nattending token', fontsize=LABEL)
      if i == n - 1:
        ax.set_xlabel('attended token', fontsize=LABEL)
  cbar = fig.colorbar(im, ax=axes, shrink=0.6, label='attention')
  cbar.ax.tick_params(labelsize=TICK)
  if title:
    fig.suptitle(title, fontsize=TITLE)
  return fig


def activation_map(acts_NxTxM: np.ndarray, token_labels: Sequence[Sequence[str]],
                   row_titles: Sequence[str], channels: Optional[slice] = None, title: str = '',
                   max_cols: int = 3):
  """MLP activations (tokens x channels) per input/model, as the paper's Figs 46, 53.

  A grid of at most max_cols columns sharing one colour scale and colour bar.
  """
  n = acts_NxTxM.shape[0]
  channels = channels or slice(0, acts_NxTxM.shape[-1])
  acts = np.asarray(acts_NxTxM)[..., channels]
  n_cols = min(n, max_cols)
  n_rows = -(-n // n_cols)
  T, M = acts.shape[1:]
  fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, layout='constrained',
                           figsize=(min(max(3.0, 0.12 * M), 6.0) * n_cols + 1.2,
                                    (0.22 * T + 1.0) * n_rows + 0.8))
  finite = acts[np.isfinite(acts)]
  vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
  for i, ax in enumerate(axes.flat):
    if i >= n:
      ax.axis('off')
      continue
    im = ax.imshow(acts[i], cmap='magma', aspect='auto', vmin=vmin, vmax=vmax)
    ax.set_yticks(range(len(token_labels[i])), token_labels[i], fontsize=TICK)
    ax.tick_params(axis='x', labelsize=TICK)
    ax.set_xlabel(f'channel {channels.start}..{channels.stop - 1}', fontsize=LABEL)
    ax.set_title(row_titles[i], fontsize=LABEL + 1)
  cbar = fig.colorbar(im, ax=axes, shrink=0.8, label='activation')
  cbar.ax.tick_params(labelsize=TICK)
  if title:
    fig.suptitle(title, fontsize=TITLE)
  return fig


def curves(x, series: dict, xlabel: str, ylabel: str, title: str = '', logx: bool = False,
           bands: Optional[dict] = None, ylim=None):
  """Line plot of named series; `bands` maps a name to (low, high) arrays."""
  fig, ax = plt.subplots(figsize=(5.5, 3.8), layout='constrained')
  for name, y in series.items():
    line, = ax.plot(x, y, label=name, marker='.' if len(x) < 30 else None)
    if bands and name in bands:
      lo, hi = bands[name]
      ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
  if logx:
    ax.set_xscale('symlog', linthresh=1)
  ax.set_xlabel(xlabel, fontsize=LABEL)
  ax.set_ylabel(ylabel, fontsize=LABEL)
  ax.tick_params(labelsize=TICK)
  if ylim:
    ax.set_ylim(*ylim)
  if title:
    ax.set_title(title, fontsize=LABEL + 1)
  ax.legend(fontsize=TICK)
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
                   title: str = '', logx: bool = False, ylim=(-3, 103), rows=None,
                   hline: Optional[tuple[float, str]] = None):
  """One panel per panel(member) (per rows(member) row, if given), one line per
  group(member), mean and 95% band over the members that share both (the seeds).

  values_XxP: a metric at each x for every member (columns follow `members`).
  Panels, rows and groups are in natural order (numbers as numbers: lr ascending);
  a group keeps its colour in every panel, and the figure has one legend.
  hline: (y, label) drawn in every panel, e.g. a revival threshold.
  """
  values_XxP = np.asarray(values_XxP, float)
  row_of = rows or (lambda m: '')
  row_names = sorted({row_of(m) for m in members}, key=natural_key)
  panels = sorted({panel(m) for m in members}, key=natural_key)
  groups = sorted({group(m) for m in members}, key=natural_key)
  colour = {g: f'C{i % 10}' for i, g in enumerate(groups)}
  n_of = {g: sorted({sum(1 for m in members if group(m) == g and panel(m) == p and
                         row_of(m) == r) for p in panels for r in row_names} - {0})
          for g in groups}
  fig, axes = plt.subplots(len(row_names), len(panels), figsize=(3.4 * len(panels) + 0.5,
                           2.8 * len(row_names) + 1.2), squeeze=False, layout='constrained')
  for r, rname in enumerate(row_names):
    for c, pname in enumerate(panels):
      ax = axes[r, c]
      sel = [i for i, m in enumerate(members) if panel(m) == pname and row_of(m) == rname]
      for gname in groups:
        idx = [i for i in sel if group(members[i]) == gname]
        if not idx:
          continue
        ns = n_of[gname]
        mean, (lo, hi) = seed_band(values_XxP[:, idx].T)
        ax.plot(x, mean, color=colour[gname], marker='.' if len(x) < 30 else None,
                label=f'{gname} (n={ns[0]}' + (f'-{ns[-1]})' if len(ns) > 1 else ')'))
        ax.fill_between(x, lo, hi, color=colour[gname], alpha=0.2)
      if hline is not None:
        ax.axhline(hline[0], color='k', ls=':', lw=1.2, label=hline[1])
      if logx:
        ax.set_xscale('symlog', linthresh=1)
        ax.set_xlim(left=0)  # Iterations: no negative half of the symlog axis.
      if ylim:
        ax.set_ylim(*ylim)
      ax.set_title(' '.join(str(s) for s in (rname, pname) if s != ''), fontsize=LABEL)
      ax.set_xlabel(xlabel, fontsize=LABEL)
      ax.set_ylabel(ylabel, fontsize=LABEL)
      ax.tick_params(labelsize=TICK)
      ax.grid(alpha=0.3)
  figure_legend(fig)
  fig.suptitle(f'{title} (mean and 95% t-interval over seeds)', fontsize=TITLE)
  return fig
