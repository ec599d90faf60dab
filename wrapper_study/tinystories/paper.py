"""The paper's TinyStories numbers and every claim of this world, as data, in one module.

Paper Sec. 5.2, App. F: Table 1 and the twist classifier's accuracy. Each
claim (statement, metric, threshold) and every margin was fixed here before any
run; `tinystories.claims` judges them, so a claim's wording, its threshold and
its test cannot drift apart. Only report.claims (the shared Claim) is imported.
"""

from wrapper_study.report.claims import Claim

# The paper's two pretrained models (run and stream names): on the whole
# pretraining split, and with the Twist stories filtered out.
PRESENT = 'present'
NOT_IN_PT = 'not_in_pt'

# Paper Table 1 (% of generations with a twist during reFT), rows (protocol,
# lr name) and Not in PT; columns reFT iterations 0, 30, 300, 3000.
PAPER_TABLE1_POINTS = (0, 30, 300, 3000)
PAPER_TABLE1 = {
    ('F', 'eta_M'): (44, 81, 81, 82),
    ('F+RR', 'eta_M'): (12, 56, 69, 75),
    ('F+MM', 'eta_M'): (31, 88, 50, 75),
    ('F', 'eta_S'): (69, 88, 75, 94),
    ('F+RR', 'eta_S'): (12, 44, 81, 81),
    ('F+MM', 'eta_S'): (50, 81, 62, 81),
    NOT_IN_PT: (12, 31, 44, 81),
}
PAPER_CLASSIFIER_ACCURACY = 92.0  # The paper's GPT-3.5 twist classifier, held out.
PAPER_REFT_STEPS = 4000  # reFT iterations in the paper (Table 1's last point is 3000).
# How far the paper's reFT moves the model relative to its pretraining (train.lr_budget_ratio):
# 4000 x 1e-5 over Sum_t lr_t of 30K steps at 1e-3 (1000 warmup, cosine to 0).
REFT_BUDGET_RATIO = 4000 * 1e-5 / (1e-3 * (1000 / 2 + 29_000 / 2))
DELETION_BUDGET_RATIO = REFT_BUDGET_RATIO * 1e-4 / 1e-5  # Deletion at eta_M = 1e-4.
# The paper's F (eta_S) still writes a twist in 69% of generations after deletion (Table 1),
# so its Present follows the Twist instruction at least that often: the starting point's
# anchor, reported beside ours (the paper gives no Present row).
PAPER_PRESENT_AT_LEAST = 69.0
PAPER_GENERATIONS = '~16'  # Generations per Table 1 cell in the paper.
PAPER_SCALE = ('Paper: 91M parameters; pretraining 30K steps x 128 x 1024 tokens; deletion and '
               'reFT 4000 steps x 128 x 1024 at 1e-4, 1e-5 and 1e-5.')

# ------------------------------------------------ claim thresholds and rules ----
# Fixed before any run. How each claim is decided (tinystories.claims):
# - A generation rate (twist fraction, k of n generations) carries its 95% Wilson
#   interval; a difference of two rates carries Newcombe's interval (the hybrid
#   score interval built from the two Wilson intervals) and is decided on it.
# - A Twist-story loss is one mean over the test Twist stories (no per-story
#   spread is kept), so a loss difference d carries the band d +- LOSS_MARGIN:
#   it holds when d >= LOSS_MARGIN, does not hold when d < -LOSS_MARGIN, and is
#   'inconclusive' in between (never a bare a <= b).
# - With several replicates (model_seeds) each value is computed per replicate and
#   decided by the 95% t-interval over replicates; one replicate decides nothing
#   ('not measured (1 seed)'), except the classifier (one object, no seeds).
# - "Every model" claims judge the worst model: hold only when every model's
#   interval is on the claimed side, do not hold when one is wholly on the other.
# - Models in which deletion did not remove Twist (the manipulation check) are
#   left out of the reFT and probe claims, and named; none left: not measured.
CLASSIFIER_MIN_ACCURACY = 90.0  # The generation score is only read if the classifier is this good.
LOSS_MARGIN = 0.02  # Nats per story token: loss differences within +-this are inconclusive.
# Deletion removed Twist (manipulation check of the reFT and probe claims): the
# deleted model's twist fraction is surely (95% Wilson upper bound) below this
# share of Present's, which is also the level reFT must bring it back to.
RECOVERY_LEVEL = 0.75
PROBE_TOLERANCE = 5.0  # Points of probe accuracy that count as "no information removed".
# Present minus Not-in-PT probe accuracy (points) at or above which Present decodes the feature
# "at least as well" (the bounds of Fig. 11 left).
PRESENT_PROBE_MIN_GAP = 0.0

WORLD = 'tinystories'
_NEWCOMBE = '95% Newcombe interval of the difference of two Wilson rates'
_BAND = f'interval: the difference +- {LOSS_MARGIN:g}'
_EVERY = 'worst model (min of value, low, high over models)'
CLAIMS = {c.claim_id: c for c in (
    Claim(WORLD, 'classifier_accuracy',
          'the local Twist classifier that scores generations is accurate enough to read '
          f'(paper: GPT-3.5, {PAPER_CLASSIFIER_ACCURACY:g}% held out)',
          'held-out accuracy on the test split, %; 95% Wilson interval over its stories',
          CLASSIFIER_MIN_ACCURACY, control='the majority class of the test split'),
    Claim(WORLD, 'deletion_raises_loss',
          "deletion raises every deleted model's Twist-story loss above Present's (Fig. 31)",
          f'deleted minus Present Twist-story loss at the end of deletion, nats/token; {_BAND}; '
          f'{_EVERY}', 0.0, control="Not-in-PT's loss after pretraining (shown)"),
    Claim(WORLD, 'deletion_lr_raises_loss_more',
          'the larger deletion lr raises the Twist-story loss more than the smaller, for every '
          'protocol (Fig. 31)',
          'larger- minus smaller-lr Twist-story loss at the end of deletion, nats/token; '
          f'{_BAND}; worst protocol', 0.0,
          control='the same protocol at the smaller lr, same steps and data'),
    Claim(WORLD, 'deletion_lowers_fraction',
          "deletion lowers every deleted model's twist fraction below Present's (Fig. 32)",
          f'Present minus deleted twist fraction at the end of deletion, points; {_NEWCOMBE}; '
          f'{_EVERY}', 0.0, control="Not-in-PT's twist fraction after pretraining (shown)"),
    Claim(WORLD, 'reft_recovers_faster',
          'reFT brings Twist back faster in every deleted model than in Not-in-PT (Table 1, '
          'Fig. 34)',
          'reFT iterations Not-in-PT needs minus those the deleted model needs to reach '
          f"{RECOVERY_LEVEL:g} x Present's twist fraction (first evaluated reFT step; never = "
          'the step after the last); interval: from the first step whose Wilson interval may '
          'reach the level to the first step whose interval surely does; neither arm reaches it: '
          'censored (no value); ' + _EVERY, 1.0,
          control='reFT of Not-in-PT, same lr, steps, data and scoring grid (1, 2, 4, ...)'),
    Claim(WORLD, 'reft_loss_below_not_in_pt',
          "after reFT every deleted model's Twist-story loss is below Not-in-PT's (Figs 11 "
          'right, 33)',
          f'Not-in-PT minus deleted Twist-story loss at the end of reFT, nats/token; {_BAND}; '
          f'{_EVERY}', 0.0,
          control='reFT of Not-in-PT, same lr, steps and data'),
    Claim(WORLD, 'probe_kept_small_lr',
          'at the smaller deletion lr (eta_S) no protocol removes Twist information (Fig. 11 '
          'left)',
          'Present minus deleted Twist probe accuracy, mean over B1..BL, points; '
          f'{_NEWCOMBE} (n = probe test stories); {_EVERY}', PROBE_TOLERANCE, '<=',
          control="Not-in-PT's probe and the majority class (shown)"),
    Claim(WORLD, 'probe_kept_every_lr',
          'the same at every deletion lr (paper: "the same trend, less strongly")',
          'Present minus deleted Twist probe accuracy, mean over B1..BL, points; '
          f'{_NEWCOMBE}; {_EVERY}', PROBE_TOLERANCE, '<=',
          control="Not-in-PT's probe and the majority class (shown)"),
    Claim(WORLD, 'probe_other_features_kept',
          'the other probed features differ negligibly from Present in every deleted model '
          '(Figs 36-38)',
          '|Present minus deleted| probe accuracy, mean over B1..BL, points; |Newcombe '
          'interval|; worst model and feature', PROBE_TOLERANCE, '<=',
          control='|Present minus Not-in-PT| on the same features (shown)'),
    Claim(WORLD, 'probe_present_vs_not_in_pt',
          'Present decodes Twist at least as well as Not-in-PT (the bounds of Fig. 11 left)',
          f'Present minus Not-in-PT Twist probe accuracy, mean over B1..BL, points; {_NEWCOMBE}',
          PRESENT_PROBE_MIN_GAP, control='the majority class of the probe labels (shown)'),
)}
