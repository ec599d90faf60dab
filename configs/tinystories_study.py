r"""The TinyStories world (paper Sec. 5.2, App. B.3, F; Table 1, Figs 11, 31-38).

Pretrains two LLaMA-style models on TinyStories-Instruct ("Present" on the
whole pretraining split, "Not-in-PT" without Twist stories), deletes Twist from
Present with the protocols F, F+MM and F+RR at two learning rates, reverse
fine-tunes (reFT) every deleted model and Not-in-PT on Twist stories, and
measures the loss on Twist stories, the generation score (fraction of sampled
stories a local classifier calls Twist) in the layout of Table 1, and linear
probes for four story features at every block.

CPU scale (default; minutes on 2 cores, on a SYNTHETIC stand-in for the data:
NOT the paper's data and NOT the paper's numbers):
  python launch/main.py --config=configs/tinystories_study.py --workdir=runs/tinystories_cpu
Paper scale (a GPU; needs the official files, nothing is downloaded):
  1. Download TinyStories-Instruct from Hugging Face, dataset
     roneneldan/TinyStoriesInstruct: TinyStories-Instruct-train.txt and
     TinyStories-Instruct-valid.txt, into one local folder.
  2. python launch/main.py --config=configs/tinystories_study.py:paper \
       --config.data.path=/that/folder --workdir=runs/tinystories_paper
Tiny, for tests:
  python launch/main.py --config=configs/tinystories_study.py:smoke --workdir=/tmp/ts_smoke

The paper's scale (`:paper`): llama_config(vocab 8192, context 1024, width
768, 12 layers, 12 heads), ~91M parameters with tied embeddings; pretraining
batch 128 x 1024 tokens, 30K steps, linear warmup then cosine to 0, max lr
1e-3, AdamW (0.9, 0.95), weight decay 0.1, clip 1.0 (Sec. 5.2). Deletion and
reFT: 4000 iterations, batch 128, constant lr, deletion at eta_M = 1e-4 and
eta_S = 1e-5, reFT at 1e-5 (the authors' *_aws configs). Table 1 points: reFT
iterations 0, 30, 300, 3000.

CPU scale vs paper: width 64, 2 layers, 4 heads, vocab 512, context 256
(~0.14M parameters); 8000 synthetic examples in 10 shards (50 in the paper);
pretraining 1800 steps of 16 x 256 tokens at lr 3e-3 (the PCFG world's CPU
choice; 1e-2 did no better in one 1000-step run). Deletion is 240 steps of 16
windows at the paper's lr ratios to pretraining: eta_M = pretrain lr / 10 =
3e-4 and eta_S = / 100 = 3e-5 (the main text's definitions); by the lr budget
(lr x steps over the pretraining lr sum) it moves the model 0.027 at eta_M,
the paper's (issue 29; 100 steps, 0.42x, until then). reFT runs at eta_S for 240 steps, which
moves the model as far relative to its pretraining as the paper's 4000
(0.0027 both). The Table 1 points are the paper's scaled by 240/4000: reFT
iterations 0, 2, 18, 180 stand for 0, 30, 300, 3000; the recovery claim also
scores 1, 2, 4, ..., 128, 240 (reft.recovery_steps). 64 generations of up to
144 tokens per point (paper: ~16 of 350). Training windows start at examples
(data.align_windows): with 256-token windows the authors' fixed cuts separate
most ~150-token examples from their Features line; the model then followed
the Twist instruction only late (one run: 28% of generations at step 1200,
72% at 1500).
Pretraining length, by the starting point's anchor (issue 13; a rule on
Present's behaviour, never on a claim): the paper's Present follows the Twist
instruction in >= 69% of generations (its F at eta_S still does after
deletion, Table 1), so
the CPU scale pretrains for the smallest of 1200 / 1800 / 2400 steps at which
Present (seed 0) reaches 69%: measured 25% / 72% / 88% of 64 generations ->
1800 (warmup 10%). The three replicates then start at 72%, 53%, 80% (68%
[61, 74] pooled; Not-in-PT 0%); the report's calibration section shows them.
(On the first synthetic data, v1 with one twist template, 1200 steps gave
86%; v2's four twist forms and near-miss surprises take longer.)
Replicates: model_seeds (0, 1, 2), each a full study (its own init, batch
order and samples; the data, tokenizer, classifier and probe sets are shared,
seeded by `seed`); the claims decide by 95% t-intervals over the three.
Measured: 16m22s wall for the whole default run on an idle 2-core AMD EPYC
(tcmalloc, synthetic v2, 3 replicates, fused attention): pretraining 9.1 min
(six models), 39 deletion/reFT runs 6.6 min, probes 35 s. (1200 pretraining
and 160 reFT steps: 12m11s; the same with the explicit attention: 15m58s.)

Choices where the paper is silent, with reasons:
- Pretraining warmup: 1000 of 30K steps at paper scale, llama2.c's
  warmup_iters default in the authors' train.py (the paper says only "linear
  warmup"); 10% at CPU scale. Cosine ends at 0 (min_lr = 0 in their code).
- Weight decay 0.1 on every parameter (optax.adamw), where llama2.c decays
  only the 2-D weights; also during deletion and reFT (their train.py uses one
  weight_decay for every phase).
- Deletion and reFT batch: 128 sequences at paper scale (16 x 8 gradient
  accumulation in the authors' configs); here one batch of 128.
- Generation: prompts are the instruction lines of test-split Twist stories
  (the authors' reFT runs prompt from their dataset's test split,
  specialise-Twist), temperature 1.0, stopped at the example separator (BOS):
  text after it is a new example and would confuse the classifier. The
  authors sampled 350 tokens without stopping.
- Classifier: the project's local n-gram logistic regression
  (wrapper_study/tinystories/classifier.py) trained on pretraining-split
  stories labelled by their Features line, in place of the paper's fine-tuned
  GPT-3.5 (92% held-out accuracy); its held-out accuracy on the test split is
  in the report.
- Probes: binary linear probe with a bias (two softmax logits) on
  standardised features, AdamW lr 1e-3 constant, 2000 steps, batch 128 (the
  authors' probe config: BCE, lr 1e-3, 2000 iterations, batch 128, bias-free);
  input = mean residual over the final 10 story tokens, story only.
- Sub-sampling at paper scale (compute): the tokenizer trains on 200K
  pretraining examples, the classifier on 100K, probes on 8192 / test 2048,
  the Twist-story loss on 1024 test Twist stories.
"""

import ml_collections

PAPER_REFT_POINTS = (30, 300, 3000)  # Table 1 columns after iteration 0.


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """arg: '' or 'cpu' (CPU scale, synthetic data), 'paper' (GPU, official data) or 'smoke'."""
  c = ml_collections.ConfigDict()
  c.experiment = 'tinystories_study'  # Which wrapper_study.experiments module runs.
  c.seed = 0  # The data's random choices (stories, splits, tokenizer, classifier, probes).
  # Replicates: each pretrains Present and Not-in-PT from its own init and batch order, then
  # deletes, reverse fine-tunes and samples with that seed. The claims decide with 95%
  # t-intervals over them (issue 13: >= 3 seeds); the tables show their mean. One seed keeps
  # the flat workdir layout; several get workdir/seed_<s> each.
  c.model_seeds = (0, 1, 2)

  c.data = ml_collections.ConfigDict(dict(
      path='',  # '' = the SYNTHETIC stand-in; else local TinyStories-Instruct .txt file(s).
      synthetic_examples=8000,  # Size of the synthetic set (path='' only).
      # 'v2': Twist in four structurally different forms from the shared vocabulary, plus
      # near-miss surprises that are not twists; 'v1': the earlier one-template twist.
      synthetic_version='v2',
      max_examples=0,  # Use only the first N examples of the files (0 = all).
      n_shards=10,  # Shard 0 = test; of the rest 80% pretrain, 20% fine-tune/reFT (paper: 50).
      vocab_size=512,  # SentencePiece BPE pieces (paper: 8192); must equal model.vocab_size.
      tokenizer_examples=0,  # Pretraining examples the tokenizer trains on (0 = all).
      align_windows=True,  # Training windows start at examples (paper/authors: cut every max_len).
  ))
  c.model = ml_collections.ConfigDict(dict(
      flavour='llama',  # model_factory.from_config: llama_config (RMSNorm, RoPE, SwiGLU, tied).
      vocab_size=512,  # Paper: 8192.
      max_len=256,  # Context (paper: 1024).
      d_model=64,  # Paper: 768.
      n_layers=2,  # Paper: 12.
      n_heads=4,  # Paper: 12.
      multiple_of=32,  # SwiGLU width rounding (llama2.c: 64 at 91M).
      precision='fp32',  # Matmuls: 'fp32', 'tf32' (GPU/TPU) or 'bf16' compute (params stay fp32).
      # 'explicit' or 'fused' (wrapper_study/attention_ops.py: cuDNN flash on GPU under bf16,
      # causal query blocks on CPU): the same function. At this scale's 256-token context the
      # fused form trains 1.32-1.36x faster on CPU (benchmarks/tinystories_throughput.py
      # --no-sampling --attention=explicit|fused: 58.5-60.2 vs 44.3-44.7 ms/step, idle).
      attention='fused',
  ))
  c.pretrain = ml_collections.ConfigDict(dict(
      # Paper: 30K. Chosen by the starting point's anchor (issue 13): the smallest of 1200 /
      # 1800 / 2400 steps at which Present (seed 0) follows the Twist instruction in >= 69% of
      # generations, the paper's lower bound; measured 25% / 72% / 88%.
      steps=1800,
      batch_size=16,  # Sequences of model.max_len tokens (paper: 128).
      lr=3e-3,  # Max lr (paper: 1e-3).
      warmup_steps=180,  # Linear warmup from 0, 10% (paper silent; 1000 in the authors' code).
      min_lr_ratio=0.0,  # Cosine decays to lr * this (paper: to 0).
      weight_decay=0.1,
      eval_every=300,  # Twist-story loss during pretraining (steps).
      save_every=300,  # Resumable checkpoint interval (steps).
      log_every=50,
  ))
  c.deletion = ml_collections.ConfigDict(dict(
      feature='Twist',  # The feature to delete (paper: Twist).
      unrelated='Foreshadowing',  # F+MM renames this feature to `feature`.
      protocols=('F', 'F+RR', 'F+MM'),  # Table 1 row order.
      lrs=(3e-4, 3e-5),  # Constant; pretrain.lr / 10 and / 100 (paper: eta_M = 1e-4, eta_S = 1e-5).
      lr_names=('eta_M', 'eta_S'),  # Table 1 names of lrs, in order.
      rr_fraction=1.0,  # F+RR: share of filtered stories given the feature (authors: 1.0).
      # Paper: 4000. 240 moves the model as far relative to its pretraining as the paper's
      # deletion at eta_M (lr budget 0.027 both; issue 29: 100 steps gave 0.42x the paper's).
      steps=240,
      batch_size=16,  # Paper: 128.
      loss_steps=(10, 30, 100, 240),  # Twist-story loss during deletion (Fig. 31); 0 is Present.
      save_every=100,
      log_every=50,
  ))
  c.reft = ml_collections.ConfigDict(dict(
      lr=3e-5,  # Constant; pretrain.lr / 100 (paper: 1e-5 = eta_S).
      # Paper: 4000. Here as far relative to pretraining as the paper's reFT moves its model:
      # lr x steps / Sum_t pretraining lr_t = 0.0027 both (train.lr_budget_ratio).
      steps=240,
      batch_size=16,  # Paper: 128.
      loss_steps=(1, 3, 18, 60, 180, 240),  # Twist-story loss (Figs 11 right, 33), log-spaced.
      score_steps=(2, 18, 180),  # Table 1 columns after 0: the paper's 30, 300, 3000 x 240/4000.
      # Also scored (the recovery claim's grid, issue 29): doublings up to the budget, so the
      # iterations to 3/4 of Present's twist fraction are read within a factor 2, not 10.
      recovery_steps=(1, 2, 4, 8, 16, 32, 64, 128, 240),
      save_every=100,
      log_every=50,
  ))
  c.eval = ml_collections.ConfigDict(dict(
      num_generations=64,  # Samples per generation-score point (paper: ~16).
      max_new_tokens=144,  # Paper: 350; prompt + this must fit model.max_len.
      temperature=1.0,
      loss_examples=96,  # Test-split Twist stories in the Twist-story loss.
      batch_size=32,  # Rows per loss forward.
  ))
  c.classifier = ml_collections.ConfigDict(dict(
      n_train=0,  # Pretraining-split stories it trains on (0 = all).
      n_test=0,  # Test-split stories for its held-out accuracy (0 = all).
  ))
  c.probe = ml_collections.ConfigDict(dict(
      features=('Twist', 'Foreshadowing', 'MoralValue', 'BadEnding'),  # Figs 35-38.
      n_train=1500,  # Pretraining-split stories the probes train on.
      n_test=800,  # Test-split stories they are scored on.
      steps=2000,  # AdamW iterations (authors: 2000).
      lr=1e-3,  # Constant (authors: 1e-3).
      batch_size=128,  # Authors: 128.
      feature_batch_size=128,  # Rows per forward when collecting activations.
  ))

  if arg == 'paper':
    c.model_seeds = (0,)  # The paper trains one Present and one Not-in-PT.
    c.data.update(synthetic_examples=0, n_shards=50, vocab_size=8192, tokenizer_examples=200_000,
                  align_windows=False)
    c.model.update(vocab_size=8192, max_len=1024, d_model=768, n_layers=12, n_heads=12,
                   multiple_of=64, attention='fused')
    c.pretrain.update(steps=30_000, batch_size=128, lr=1e-3, warmup_steps=1000,
                      eval_every=2500, save_every=1000, log_every=100)
    c.deletion.update(lrs=(1e-4, 1e-5), steps=4000, batch_size=128,
                      loss_steps=(100, 300, 1000, 2000, 4000), save_every=500, log_every=100)
    c.reft.update(lr=1e-5, steps=4000, batch_size=128,
                  loss_steps=(1, 3, 10, 30, 100, 300, 1000, 3000, 4000),
                  score_steps=PAPER_REFT_POINTS, save_every=500, log_every=100,
                  recovery_steps=tuple(2 ** k for k in range(12)) + (4000,))
    c.eval.update(num_generations=16, max_new_tokens=350, loss_examples=1024, batch_size=32)
    c.classifier.update(n_train=100_000, n_test=20_000)
    c.probe.update(n_train=8192, n_test=2048, feature_batch_size=64)
  elif arg == 'smoke':
    c.model_seeds = (0,)
    c.data.update(synthetic_examples=600, n_shards=5, vocab_size=384)
    c.model.update(vocab_size=384, d_model=32, n_layers=1, n_heads=2)
    c.pretrain.update(steps=4, batch_size=4, warmup_steps=1, eval_every=2, save_every=2,
                      log_every=2)
    c.deletion.update(steps=2, batch_size=4, loss_steps=(1, 2), save_every=1, log_every=1)
    c.reft.update(steps=3, batch_size=4, loss_steps=(1, 2, 3), score_steps=(1, 2, 3),
                  recovery_steps=(1, 2, 3), save_every=1, log_every=1)
    c.eval.update(num_generations=4, max_new_tokens=16, loss_examples=8, batch_size=8)
    c.probe.update(n_train=64, n_test=32, steps=20, batch_size=32, feature_batch_size=32)
  elif arg not in ('', 'cpu'):
    raise ValueError(f"configs/tinystories_study.py: unknown config argument {arg!r}; "
                     "valid: '', 'cpu', 'paper', 'smoke'.")
  return c
