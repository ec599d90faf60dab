"""The Tracr report's calibration: the starting point, the learning-rate anchors, the
fine-tuning traces (issue 28), and Table 3 under each sensitivity arm.

What a reader checks before trusting the claims: does fine-tuning start from a
sound model (the noise anchor), do the learning-rate labels mean the behaviour
they name (tracr/anchors.py), what the optimizer did per member (loss, gradient
norm before clipping, fraction of clipped steps, update norm, distinct answers;
written to TensorBoard by the population's writer), and how much the start or
the clipping decides Table 3 (the arms).
"""

from __future__ import annotations

from wrapper_study.report import tables
from wrapper_study.tracr import anchors
from wrapper_study.tracr import report
from wrapper_study.tracr import train as tracr_train


def calibration_section(config, task, rows, why: str, anchor_rows=None,
                        traces: str = '') -> tuple[str, str]:
  """The starting point: each seed's noised-only Acc O_PT as % of the compiled model's; then
  the learning-rate anchors (anchors.check; None: not shown) and the traces' paragraph."""
  anchor, std = config.calibration.anchor_pct, config.finetune.noise_std
  levels = sorted({r['noise_std'] for r in rows})
  seeds = sorted({r['seed'] for r in rows})
  table = []
  for level in levels:
    at = {r['seed']: r for r in rows if r['noise_std'] == level}
    table.append({'noise_std': f'{level:g}' + (' (fine-tuned from)' if level == std else ''),
                  **{f'seed {s}': at[s]['pct_of_compiled'] for s in seeds},
                  'min': min(at[s]['pct_of_compiled'] for s in seeds),
                  f'every seed >= {anchor:g}%': 'yes' if all(at[s]['passes'] for s in seeds)
                  else 'NO'})
  start = [r for r in rows if r['noise_std'] == std]
  worst = min(start, key=lambda r: r['pct_of_compiled'])
  verdict = (f'Fine-tuning starts from noise_std = {std:g} ({why}); its worst seed keeps '
             f"{worst['pct_of_compiled']:g}% of the compiled Acc O_PT.")
  if not worst['passes']:
    verdict += (' The starting point is already broken: pruning gains and reverse fine-tuning '
                'then partly measure the repair of noise, not a capability that fine-tuning '
                'hid (read them against the noised-only controls).')
  if anchor_rows is not None:
    verdict += ('\n\n**Learning-rate anchors** (fixed before any run, '
                'wrapper_study/tracr/anchors.py): each label against the behaviour the paper\'s '
                'Table 3 gives it at C_Tr=0 (models fine-tuned at C_Tr=0, mean over seeds; '
                'C_Te=0 is the set the paper\'s columns read).\n\n' +
                (tables.markdown_table(anchor_rows, anchors.COLUMNS) + '\n\n'
                 if anchor_rows else '') + anchors.verdict(anchor_rows))
  if traces:
    verdict += '\n\n' + traces
  return (f'{task}: calibration, the starting point',
          f'Noised-only models (compiled + each seed\'s weight noise, never fine-tuned): Acc '
          f'O_PT on the C_Te=0 set as % of the compiled model\'s. Anchor, fixed before any run '
          f'(calibration.anchor_pct): a sound start keeps >= {anchor:g}% on every seed.\n\n' +
          tables.markdown_table(table) + '\n\n' + verdict)


def arm_sections(config, task, arm_rows) -> list[tuple[str, str]]:
  """Table 3 again for each sensitivity arm (calibration.arms), beside the main one."""
  sections = []
  for arm in dict.fromkeys(r['arm'] for r in arm_rows):
    rows = [r for r in arm_rows if r['arm'] == arm]
    field, value = tracr_train.parse_arm(arm)
    sections.append((f'{task}: Table 3, sensitivity arm {arm}',
                     f'The main grid with one change, {arm} (finetune.{field} = {value:g}; '
                     f'seeds {tuple(config.calibration.get("arm_seeds") or config.finetune.seeds)}), to '
                     f'show how much the starting point or the clipping decides Table 3. The '
                     f'claims are judged on the main grid only.\n\n' +
                     report.with_line(report.agreement_line(rows)) +
                     report.table3_markdown(rows)))
  return sections
