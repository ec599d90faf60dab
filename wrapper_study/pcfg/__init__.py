"""The PCFG world (paper Sec. 4-5, App. B.2, C.2, E): data -> model -> train -> analysis -> report.

Data:
  grammar: a PCFG held as data (the paper's Fig. 14, or a file / text of one's own).
  sampler: text windows drawn from a grammar, vectorised.
  tasks: vocabulary, task families (C, CC, I, IC, T, T_J1/2), the pretraining mixture.
  finetune_data: fine-tuning batches with a controlled spurious correlation (C_Tr), test sets.
Phases:
  model: what the config fixes (model via model_factory, grammar, O', task spec, names).
  validate: config checks of both experiments, before compute.
  train: pretrain, fine-tune a population, reverse fine-tune (reFT, Scr.+FT, Scr.).
  analysis: probes, pruning + learned masks, weight change, wired to this world's data.
  claims: the Table 5 signatures and P1-P4 / E.2, judged with paper.py's thresholds.
  report: Tables 5-8 layout, analysis tables, figures, report pages.
  paper: Tables 5-8 and every claim threshold of this world.
"""
