"""The paper's TinyStories numbers and every claim threshold of this world, in one leaf module.

Paper Sec. 5.2, App. F: Table 1 and the twist classifier's accuracy. The
thresholds were fixed before any run; `report.claims` reads them from here, so
a claim's wording, its threshold and its test cannot drift apart.
"""

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
PAPER_GENERATIONS = '~16'  # Generations per Table 1 cell in the paper.
PAPER_SCALE = ('Paper: 91M parameters; pretraining 30K steps x 128 x 1024 tokens; deletion and '
               'reFT 4000 steps x 128 x 1024 at 1e-4, 1e-5 and 1e-5.')

# Claim thresholds, fixed before any run.
CLASSIFIER_MIN_ACCURACY = 90.0  # The generation score is only read if the classifier is this good.
PROBE_TOLERANCE = 5.0  # Points of probe accuracy that count as "no information removed".
# Present minus Not-in-PT probe accuracy (points) at or above which Present decodes the feature
# "at least as well" (the bounds of Fig. 11 left).
PRESENT_PROBE_MIN_GAP = 0.0
# Strict margins of the loss and twist-fraction comparisons: a claim holds when the measured value
# beats the reference by MORE than this (0: any strict improvement, as the paper reads its figures).
DELETION_LOSS_MARGIN = 0.0  # Deleted minus Present Twist-story loss (Fig. 31).
DELETION_LR_LOSS_MARGIN = 0.0  # Larger minus smaller deletion lr's Twist-story loss (Fig. 31).
DELETION_FRACTION_MARGIN = 0.0  # Present minus deleted twist fraction, points (Fig. 32).
REFT_FRACTION_MARGIN = 0.0  # Deleted minus Not-in-PT twist fraction, reFT's first point (Table 1).
REFT_LOSS_MARGIN = 0.0  # Not-in-PT minus deleted Twist-story loss after reFT (Figs 11 right, 33).
