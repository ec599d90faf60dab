"""The TinyStories world of the paper (Sec. 5.2, App. B.3, F): instruct data, protocols, tokens.

instruct: the TinyStories-Instruct text format, loader and writer.
synthetic: a small generated stand-in in the same format (not the paper's data).
protocols: shard splits and the deletion protocols F, F+MM, F+RR.
tokenizer: SentencePiece BPE trained by the project.
tokens: token arrays for LM training, Twist-story loss, prompts and probes.
classifier: the local story-feature classifier that scores generations.
"""
