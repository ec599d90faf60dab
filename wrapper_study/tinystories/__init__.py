"""The TinyStories world of the paper (Sec. 5.2, App. B.3, F): data -> model -> train -> report.

Data (as the paper's files, or a synthetic stand-in):
  instruct: the TinyStories-Instruct text format, loader and writer.
  synthetic: a small generated stand-in in the same format (not the paper's data).
  protocols: shard splits and the deletion protocols F, F+MM, F+RR.
  tokenizer: SentencePiece BPE trained by the project.
  tokens: token arrays for LM training, Twist-story loss, prompts and probes.
  classifier: the local story-feature classifier that scores generations.
  data: the data stage: config checks, splits, tokenizer, token streams -> World.
The study's stages:
  model: the config's model section through model_factory (LLaMA flavour).
  evaluate: the Twist-story loss and the twist fraction of generations.
  train: the phases pretrain, deletion, reverse fine-tuning (resumable runs).
  analysis: linear probes per feature and block, wired to analysis.probing.
  report: Table 1 beside the paper, loss tables, probes, figures, claims, report.md.
  paper: the paper's numbers and every claim threshold (a leaf module).
Sequenced by wrapper_study/experiments/tinystories_study.py.
"""
