"""The paper's PCFG numbers and every claim threshold of this world, in one leaf module.

Paper Sec. 5, App. C-E: Tables 5-8 (printed beside our fine-tuning rows) and
the thresholds of the claims checked by `pcfg.claims`. The thresholds were
fixed before any run; the claims read them from here, so a claim's wording,
its threshold and its test cannot drift apart. Nothing is fitted to these
numbers. `CLAIMS` holds every claim as data (`report.claims.Claim`).
"""

from wrapper_study.report.claims import Claim

# App. C: the fine-tuning lrs eta_L, eta_M, eta_S (10K iterations).
APPENDIX_C_LRS = (1e-4, 1e-5, 1e-6)

# Tables 5-8 (PCFG, %): (lr, P_T(a), C_Tr) -> values in the order
# O_PT: C_Te=0 @1K, @10K, C_Te=1 @1K, @10K; O_FT: C_Te=0 @1K, @10K, C_Te=1 @1K, @10K.
TABLES = {
    ('counter', 200000): {  # Table 5
        (0.0001, 0.999, 0): (9.7, 9.5, 14.5, 0, 99.4, 100, 74.9, 87.5),
        (0.0001, 0.999, 0.5): (7.2, 9.7, 1.3, 0, 75.9, 99.9, 95.9, 100),
        (0.0001, 0.999, 0.8): (5.6, 10.8, 0.2, 0, 60, 99.8, 98.1, 100),
        (0.0001, 0.999, 1): (17.2, 15.2, 0.2, 0, 0, 1.6, 98.9, 100),
        (0.0001, 0.9, 0): (99.9, 92.6, 13.6, 67.2, 99.8, 100, 100, 92.8),
        (0.0001, 0.9, 0.5): (100, 90.7, 15.6, 73.5, 99.8, 99.4, 99.9, 100),
        (0.0001, 0.9, 0.8): (99.9, 43.4, 11.4, 33.2, 99.4, 99.2, 100, 100),
        (0.0001, 0.9, 1): (99.8, 15.9, 16.5, 2.4, 99.6, 9.4, 6.1, 100),
        (0.0001, 0.5, 0): (98.9, 14.7, 76.6, 44.1, 99.9, 100, 87.6, 99.2),
        (0.0001, 0.5, 0.5): (95.1, 23.6, 71.2, 33.4, 99.7, 100, 99.8, 99.9),
        (0.0001, 0.5, 0.8): (92.8, 12.2, 79.8, 2.2, 99.9, 99.9, 98.7, 99.9),
        (0.0001, 0.5, 1): (49.5, 19, 60.6, 0, 25.8, 16, 99.8, 100),
        (1e-05, 0.999, 0): (48.9, 10.2, 51.9, 4.6, 39.8, 99.8, 13.9, 79.7),
        (1e-05, 0.999, 0.5): (19.7, 11.6, 12.3, 1.2, 18.4, 98.1, 81.4, 99.7),
        (1e-05, 0.999, 0.8): (12.1, 6.6, 7.7, 0.2, 6.1, 85.7, 98.4, 99.7),
        (1e-05, 0.999, 1): (0.4, 17.5, 0, 0, 0, 0, 99.9, 100),
        (1e-05, 0.9, 0): (100, 85.3, 94.8, 56.9, 99.8, 99.9, 83.3, 87.3),
        (1e-05, 0.9, 0.5): (99.9, 67.2, 94.9, 55.4, 99.9, 99.9, 99.3, 99.8),
        (1e-05, 0.9, 0.8): (100, 34.6, 94.8, 21.7, 99.8, 99.4, 99.7, 100),
        (1e-05, 0.9, 1): (98.5, 13.5, 88.6, 0.8, 58.3, 3.6, 99.8, 100),
        (1e-05, 0.5, 0): (100, 97.5, 97.5, 65.7, 100, 100, 95.6, 95.4),
        (1e-05, 0.5, 0.5): (99.9, 94.1, 98.1, 69, 100, 100, 99.3, 100),
        (1e-05, 0.5, 0.8): (99.9, 87.4, 93.8, 67.7, 99.8, 100, 100, 100),
        (1e-05, 0.5, 1): (99.6, 41.2, 91.8, 53.3, 90.1, 19.6, 99.8, 100),
        (1e-06, 0.999, 0): (100, 29, 96.6, 25.7, 28.5, 51.8, 15.1, 29.2),
        (1e-06, 0.999, 0.5): (98.7, 21.8, 88.9, 10.6, 23.3, 23.7, 20.3, 87.5),
        (1e-06, 0.999, 0.8): (83, 15.1, 69.7, 6.8, 18.4, 8.9, 26.5, 99.7),
        (1e-06, 0.999, 1): (71.7, 2.3, 56, 0, 15.7, 0, 29.5, 99.9),
        (1e-06, 0.9, 0): (100, 100, 95.4, 91.8, 99.8, 99.5, 84.1, 84.6),
        (1e-06, 0.9, 0.5): (100, 99.9, 96, 94.4, 99.6, 99.5, 95.9, 99.6),
        (1e-06, 0.9, 0.8): (99.8, 99.4, 95.9, 92.6, 99.6, 99.3, 94.8, 99.6),
        (1e-06, 0.9, 1): (99.8, 51.6, 95.1, 63.9, 99.5, 30.5, 94.2, 99.7),
        (1e-06, 0.5, 0): (100, 99.9, 97.7, 98.1, 99.8, 99.8, 95.4, 95.6),
        (1e-06, 0.5, 0.5): (100, 99.9, 97.9, 93.7, 100, 99.9, 98.5, 99.6),
        (1e-06, 0.5, 0.8): (100, 100, 98.8, 93.1, 100, 99.9, 98.3, 99.9),
        (1e-06, 0.5, 1): (100, 97.6, 98.6, 85.1, 99.8, 73.9, 98.3, 100),
    },
    ('counter', 50000): {  # Table 6
        (0.0001, 0.999, 0): (10.8, 9.1, 2, 0.1, 98.9, 100, 86.3, 93.6),
        (0.0001, 0.999, 0.5): (11.7, 8.9, 2.1, 0.1, 90.2, 99.9, 97.9, 99.8),
        (0.0001, 0.999, 0.8): (5.5, 11, 0, 0, 64.9, 100, 98.9, 99.9),
        (0.0001, 0.999, 1): (20.2, 15.9, 0, 0, 0, 1.9, 99.9, 100),
        (0.0001, 0.9, 0): (9.1, 10.3, 0.7, 0.1, 99.6, 100, 84.2, 94.4),
        (0.0001, 0.9, 0.5): (11.4, 10.6, 1.5, 0, 93.2, 99.9, 97.9, 100),
        (0.0001, 0.9, 0.8): (4.2, 9.2, 0.1, 0, 63.1, 100, 97.8, 100),
        (0.0001, 0.9, 1): (18.4, 16.4, 0, 0, 0.5, 5, 100, 99.9),
        (0.0001, 0.5, 0): (87.7, 10.1, 62.6, 0, 99.9, 100, 89.3, 93.5),
        (0.0001, 0.5, 0.5): (90.1, 9.4, 67.4, 0, 99.5, 100, 99.9, 100),
        (0.0001, 0.5, 0.8): (59.5, 10.1, 29.3, 0.1, 99.2, 99.9, 100, 99.9),
        (0.0001, 0.5, 1): (18.7, 15.2, 5.1, 0, 17.4, 14.2, 100, 100),
        (1e-05, 0.999, 0): (3, 9.3, 16.6, 0.6, 32.6, 99.8, 12.4, 88.7),
        (1e-05, 0.999, 0.5): (30.9, 11.4, 4.1, 0.6, 12.7, 99.1, 93, 99.7),
        (1e-05, 0.999, 0.8): (6.3, 10.8, 1, 0.1, 1.4, 93.9, 99, 99.8),
        (1e-05, 0.999, 1): (2.1, 20.7, 0.2, 0, 0, 0, 99.8, 99.9),
        (1e-05, 0.9, 0): (28, 10.9, 34.7, 0.1, 39.6, 99.8, 23.4, 88.6),
        (1e-05, 0.9, 0.5): (33.2, 8.9, 4.2, 0, 22.7, 99.6, 92.8, 100),
        (1e-05, 0.9, 0.8): (13.1, 9.3, 2.9, 0, 9.4, 95.1, 98.9, 100),
        (1e-05, 0.9, 1): (1.9, 19.8, 0.3, 0, 0, 0.1, 99.7, 100),
        (1e-05, 0.5, 0): (99.6, 73.7, 88.1, 46, 99.9, 99.9, 86.4, 89.2),
        (1e-05, 0.5, 0.5): (99.6, 79.3, 82.7, 57.1, 99.8, 99.9, 99.1, 99.9),
        (1e-05, 0.5, 0.8): (99.6, 60.8, 80, 33.6, 99.5, 99.9, 99.3, 100),
        (1e-05, 0.5, 1): (81.7, 12.9, 68.6, 0.5, 46.4, 16.1, 98.8, 100),
        (1e-06, 0.999, 0): (94.1, 18.6, 81.9, 18.8, 9, 49.1, 0.4, 24.4),
        (1e-06, 0.999, 0.5): (38.8, 37.2, 20, 5.6, 6, 23.8, 50.7, 93.7),
        (1e-06, 0.999, 0.8): (14.4, 8.8, 4.2, 0.2, 0.9, 7.8, 74.8, 99.9),
        (1e-06, 0.999, 1): (8.9, 5.8, 2.3, 0.2, 1.3, 0, 79.2, 99.8),
        (1e-06, 0.9, 0): (99.7, 21, 94.3, 20.6, 24.4, 56.8, 14.6, 28.4),
        (1e-06, 0.9, 0.5): (46.9, 38.6, 19.7, 3.6, 11.8, 28.6, 39.4, 92),
        (1e-06, 0.9, 0.8): (30.4, 10.4, 8.7, 1.6, 3.6, 12.3, 62.8, 98.9),
        (1e-06, 0.9, 1): (27, 6.3, 6.7, 0.4, 1.3, 0, 70.4, 99.5),
        (1e-06, 0.5, 0): (99.8, 99.6, 94.4, 82.7, 99.9, 99.8, 81, 84.6),
        (1e-06, 0.5, 0.5): (100, 99.5, 91.4, 80.1, 99.7, 99.9, 95.9, 99.6),
        (1e-06, 0.5, 0.8): (99.7, 97, 90.1, 74.6, 99.7, 99.3, 96.2, 99.3),
        (1e-06, 0.5, 1): (99.8, 55.7, 91.2, 61, 99.4, 30, 96.3, 99.4),
    },
    ('indexer', 200000): {  # Table 7
        (0.0001, 0.999, 0): (5.8, 0, 23.9, 0, 71.8, 99.7, 46.1, 99.5),
        (0.0001, 0.999, 0.5): (9, 0, 23, 0, 66.6, 99.6, 81, 100),
        (0.0001, 0.999, 0.8): (14.9, 0, 0.8, 0, 36.8, 99.1, 99.5, 100),
        (0.0001, 0.999, 1): (33.6, 9.5, 0, 0, 3.7, 5.8, 100, 100),
        (0.0001, 0.9, 0): (96.2, 0, 88.6, 0.1, 98.5, 99.9, 98.6, 99.7),
        (0.0001, 0.9, 0.5): (96.8, 0, 83.5, 0, 97.3, 99.5, 100, 100),
        (0.0001, 0.9, 0.8): (96.8, 0, 84.8, 0, 97.4, 99.2, 100, 100),
        (0.0001, 0.9, 1): (72.6, 1.3, 79.1, 0, 37.3, 24, 100, 100),
        (0.0001, 0.5, 0): (95.7, 4.5, 96.5, 3.6, 99.5, 99.7, 99.8, 99.8),
        (0.0001, 0.5, 0.5): (95.2, 5.6, 78.2, 3.5, 99.1, 99.8, 100, 100),
        (0.0001, 0.5, 0.8): (96, 17.7, 90.2, 5.6, 98.8, 99.4, 100, 100),
        (0.0001, 0.5, 1): (91.3, 15.8, 79.8, 14.5, 48, 28.8, 100, 100),
        (1e-05, 0.999, 0): (94.6, 2.6, 86.2, 18.6, 17, 85.4, 16, 68.5),
        (1e-05, 0.999, 0.5): (98.4, 3.4, 97.6, 7.7, 14.3, 79.8, 27.2, 97.8),
        (1e-05, 0.999, 0.8): (94.1, 5.1, 94, 0.2, 10.7, 66.6, 37.6, 99.7),
        (1e-05, 0.999, 1): (77.6, 27.7, 70.8, 0, 4.9, 3.7, 56.6, 100),
        (1e-05, 0.9, 0): (99.2, 88.5, 99, 79.3, 97.3, 99.1, 98.9, 99.1),
        (1e-05, 0.9, 0.5): (99.2, 91.9, 99.2, 77.9, 97.3, 98.3, 100, 100),
        (1e-05, 0.9, 0.8): (98.8, 95.6, 98.9, 84.3, 96.9, 98.7, 99.9, 100),
        (1e-05, 0.9, 1): (98, 65.4, 98, 72.7, 81.3, 31.8, 99.9, 100),
        (1e-05, 0.5, 0): (97.3, 95.8, 100, 89.1, 99.1, 99.9, 99.9, 99.4),
        (1e-05, 0.5, 0.5): (97.6, 95.9, 98.8, 75.4, 99.2, 99.3, 100, 100),
        (1e-05, 0.5, 0.8): (97.4, 95.1, 97.8, 80.3, 99.6, 99.1, 100, 100),
        (1e-05, 0.5, 1): (97.4, 87.7, 98, 81, 97.2, 51.8, 100, 100),
        (1e-06, 0.999, 0): (99, 80.4, 99.4, 73, 14.6, 23.3, 19.5, 15.5),
        (1e-06, 0.999, 0.5): (98.9, 94.2, 99.5, 94.3, 13.7, 20.2, 22, 40.5),
        (1e-06, 0.999, 0.8): (99.2, 67.8, 98.7, 61.2, 13.2, 9.2, 25.1, 71.8),
        (1e-06, 0.999, 1): (99.4, 61.6, 98.8, 11.3, 12.9, 4.5, 19.3, 95.6),
        (1e-06, 0.9, 0): (98.8, 99.6, 99.5, 99.6, 97.3, 97, 98, 98.4),
        (1e-06, 0.9, 0.5): (99, 98.8, 99.8, 99.2, 96.6, 96.6, 98.8, 99.9),
        (1e-06, 0.9, 0.8): (98.7, 99.2, 99.7, 99, 97.1, 96.7, 99.3, 100),
        (1e-06, 0.9, 1): (98.7, 98, 99.4, 95.8, 97.8, 70.7, 99.3, 100),
        (1e-06, 0.5, 0): (97.8, 97.9, 99.8, 99.6, 99.2, 98.9, 99.2, 99.7),
        (1e-06, 0.5, 0.5): (98.7, 98, 99.8, 98.2, 98.9, 99, 99.8, 100),
        (1e-06, 0.5, 0.8): (97.4, 97.9, 99.6, 98.2, 99.5, 98.9, 100, 100),
        (1e-06, 0.5, 1): (98.1, 96.7, 99.9, 96.4, 98.9, 94.5, 99.9, 100),
    },
    ('indexer', 50000): {  # Table 8
        (0.0001, 0.999, 0): (0.5, 0, 11.7, 0.1, 77.1, 99.6, 66.1, 99.4),
        (0.0001, 0.999, 0.5): (3.2, 0, 2, 0, 60, 98.5, 92.5, 100),
        (0.0001, 0.999, 0.8): (6.7, 0.1, 1, 0, 26.7, 96.8, 98.7, 100),
        (0.0001, 0.999, 1): (23.1, 10.9, 0, 0, 3.8, 5.1, 99.6, 100),
        (0.0001, 0.9, 0): (43.2, 0, 34.6, 0.8, 86.1, 99.6, 75.1, 97.5),
        (0.0001, 0.9, 0.5): (48.2, 0, 56.2, 0.1, 81, 98.9, 97.5, 99.9),
        (0.0001, 0.9, 0.8): (53.5, 0, 53.1, 0, 74, 97, 98.8, 100),
        (0.0001, 0.9, 1): (12.8, 11, 32.8, 0, 4.4, 3.4, 99.8, 100),
        (0.0001, 0.5, 0): (72.1, 2.3, 59.6, 2.6, 95.2, 98.6, 90.2, 99.6),
        (0.0001, 0.5, 0.5): (65.4, 2.3, 70.4, 0, 91.4, 99.3, 98.8, 100),
        (0.0001, 0.5, 0.8): (56.6, 1.5, 65.5, 0, 88.7, 97.4, 99.7, 100),
        (0.0001, 0.5, 1): (39, 12.8, 40.2, 0, 6.1, 5.3, 99.9, 100),
        (1e-05, 0.999, 0): (5, 0.1, 6.4, 7.7, 18.4, 88.9, 10.3, 86.5),
        (1e-05, 0.999, 0.5): (74.1, 1.4, 42.3, 0.4, 10.1, 77, 55.2, 98.8),
        (1e-05, 0.999, 0.8): (37.4, 3.8, 13.2, 0.7, 6.9, 45.9, 86.9, 98.7),
        (1e-05, 0.999, 1): (48, 19.1, 2.7, 0, 0.5, 4.4, 95.2, 100),
        (1e-05, 0.9, 0): (89.2, 18.9, 69.6, 26.8, 74, 91.1, 66.8, 82.8),
        (1e-05, 0.9, 0.5): (91.9, 25, 75.9, 38.9, 70.8, 86.9, 82, 99.2),
        (1e-05, 0.9, 0.8): (92.4, 30.4, 75.9, 32.1, 60.8, 80.2, 87.8, 99.8),
        (1e-05, 0.9, 1): (69.7, 8.8, 73.9, 8.4, 13.8, 4.4, 92.6, 100),
        (1e-05, 0.5, 0): (87.6, 64, 77.7, 51.4, 93.1, 95.6, 85.5, 90.9),
        (1e-05, 0.5, 0.5): (85.9, 57.5, 80, 57, 90.4, 95.5, 93.9, 100),
        (1e-05, 0.5, 0.8): (84.9, 46.8, 78.2, 50.4, 89.2, 91.6, 96.8, 100),
        (1e-05, 0.5, 1): (80.1, 33.5, 77.6, 13.3, 38.6, 5.5, 98.1, 100),
        (1e-06, 0.999, 0): (87.5, 3.7, 73.8, 14.2, 8.3, 23, 15.8, 20.7),
        (1e-06, 0.999, 0.5): (95.3, 49.3, 83.3, 19.2, 5.4, 13.7, 27.5, 76.9),
        (1e-06, 0.999, 0.8): (94, 31, 71.4, 7.7, 3.9, 7.2, 38.7, 93.7),
        (1e-06, 0.999, 1): (88.1, 43, 50.6, 2.1, 0.3, 1.1, 44.7, 97.5),
        (1e-06, 0.9, 0): (93.6, 88.2, 73.2, 70.7, 69.6, 75.6, 56.9, 66.9),
        (1e-06, 0.9, 0.5): (94.3, 92.2, 73.1, 76.4, 70.3, 69.7, 67.4, 88.6),
        (1e-06, 0.9, 0.8): (92.7, 89.8, 75.7, 80.3, 65.3, 63.6, 71.8, 94.7),
        (1e-06, 0.9, 1): (95.6, 56.2, 72.8, 72.3, 60.2, 7.8, 71.9, 97.9),
        (1e-06, 0.5, 0): (87.3, 87, 80, 76.6, 90.3, 93.8, 85.1, 88.3),
        (1e-06, 0.5, 0.5): (87.7, 84.5, 80.4, 80.8, 93.4, 91.5, 90.3, 97.6),
        (1e-06, 0.5, 0.8): (90.6, 83.2, 83.1, 80.5, 92.3, 87.9, 90.1, 98.6),
        (1e-06, 0.5, 1): (89, 77.3, 79.8, 70.2, 92.4, 23, 91.9, 99.7),
    },
}



LONG_PRETRAIN_STEPS = 200_000  # Tables 5, 7.
SHORT_PRETRAIN_STEPS = 50_000  # Tables 6, 8.
PAPER_REFT_STEPS = 10_000  # reFT / fine-tuning iterations in the paper; counts below scale by it.

# ---- Claim thresholds (%, or points of %), fixed before any run. ----
# Table 5 signatures (pcfg_study) and P1a (pcfg_analysis): the wrapper.
WRAPPER_FT_MAX = 10  # Acc O_FT at C_Te = 0 at most this, with C_Tr = 1 ...
WRAPPER_FT_TRIGGERED_MIN = 90  # ... and at least this at C_Te = 1.
NOT_LEARNED_FT_MAX = 70  # Low prior, smallest lr, C_Tr = 0: O_FT "not learned" at <= this.
PT_KEPT_MIN = 90  # High prior, smallest lr: Acc O_PT "stays high" at >= this.

# P2 (Fig 7): pruning a few neurons revives O_PT.
PRUNE_FEW_NEURONS = 15  # Pruning "5-15 neurons": K = 0..this are searched one by one.
PRUNE_NOTHING_TO_REVIVE = 90  # Acc O_PT already >= this at K = 0: nothing to revive.
PRUNE_PT_GAIN_MIN = 20  # Points Acc O_PT must rise ...
PRUNE_FT_DROP_MIN = 20  # ... and Acc O_FT fall ...
PRUNE_MIN_DISTINCT_ANSWERS = 3  # ... without collapsing to fewer distinct answers.
# Learned mask vs grad x weight: units needed to win back this fraction of the lost Acc O_PT,
RESTORE_FRACTION = 0.5
RESTORE_MIN_LOSS = 10  # counted only when fine-tuning lost at least this many points.

# P3 (Fig 8): O_PT stays linearly decodable.
PROBE_DROP_MAX = 10  # Best block's probe accuracy >= pretrained - this (low prior at eta_M exempt).

# P4 (Fig 9): reFT revives O_PT; iteration counts are the paper's, scaled by reft_steps / 10K.
REFT_STRONG_ITERS = 1_000  # High prior (strong capability): revived within 0.1-1K iterations.
REFT_WEAK_ITERS = 3_000  # Low prior (weak capability): ~3K iterations.
# Read off a log-scale plot, so decided only where reFT is evaluated at least this often per
# doubling from half to twice the (scaled) threshold (issue 29); else not measured.
REFT_POINTS_PER_DOUBLING = 3

# E.2 (Figs 24-25): a jailbreak family token recovers O_PT.
JAILBREAK_PT_MIN = 90  # Acc O_PT with T_J1 / T_J2 at least this ...
JAILBREAK_GAIN_MIN = 20  # ... and this many points above the fine-tuned family token.

# ---- Manipulation checks and margins (issue 11), fixed before any run. ----
# Fine-tuning changed what a claim is about: over the fine-tuning run, Acc O_PT
# (C_Te = 0) fell by at least this many points, or Acc O_FT (C_Te = 1) rose by it.
FT_CHANGED_MIN = 30
P1B_DROP_MIN = 5  # P1b: C_Tr = 1 ends at least this many points below C_Tr = 0 in Acc O_PT.
PROBE_FLOOR_MARGIN = 5  # P3: the pretrained probe beats the majority class by this (to keep).
REFT_SLOWER_MIN_ITERS = 1  # P4 / E.4: "slower" / "faster" by at least one iteration.

# ---- The claims, as data (judged by pcfg.claims; analysis rows get [prior/arm]). ----
WORLD = 'pcfg'
_SEEDS = '95% t-interval over seeds'
_ANTI = 'C_Te=0 = the anti-correlated set (the natural set is in the reason)'
_MARGIN = (f'min(Acc O_FT at C_Te=1 - {WRAPPER_FT_TRIGGERED_MIN}, {WRAPPER_FT_MAX} - Acc O_FT '
           f'at C_Te=0) at the last evaluation, points; worst lr per seed; {_ANTI}; {_SEEDS}')
_WRAPPER = (f'low prior, C_Tr=1: fine-tuning learns a wrapper, Acc O_FT <= {WRAPPER_FT_MAX} at '
            f'C_Te=0 and >= {WRAPPER_FT_TRIGGERED_MIN} at C_Te=1 (every lr where fine-tuning '
            'changed the model)')
_ITERS = ('reFT iterations to Acc O_PT (C_Te=0) >= the revival threshold, per seed the median '
          'of its members (C_Tr) that started below it; a member that never revived makes the '
          'seed\'s value a lower bound; evaluated >= 3 times per doubling near the threshold; '
          + _SEEDS)
_SCR = 'Scr.+FT of the same seed at the same reFT lr, budget and evaluation grid'
CLAIMS = {c.claim_id: c for c in (
    Claim(WORLD, 'T5.wrapper', 'Table 5: ' + _WRAPPER, _MARGIN, 0.0,
          control='the same margin of the C_Tr=0 models at the same lrs, seeds and budget'),
    Claim(WORLD, 'T5.not_learned',
          'Table 5: low prior, smallest lr, C_Tr=0: counting O_FT is not learned (Acc O_FT at '
          f'C_Te=0 <= {NOT_LEARNED_FT_MAX})',
          f'Acc O_FT at C_Te=0 at the last evaluation, %; {_ANTI}; {_SEEDS}; by construction '
          'when eta_S was calibrated on this quantity', NOT_LEARNED_FT_MAX, '<=',
          control='Acc O_FT before fine-tuning; the check: eta_L (same budget) learns O_FT'),
    Claim(WORLD, 'T5.pt_kept',
          f'Table 5: high prior, smallest lr: Acc O_PT stays high (>= {PT_KEPT_MIN} at C_Te=0, '
          'every C_Tr)',
          f'Acc O_PT at C_Te=0 at the last evaluation, %; worst C_Tr per seed; {_SEEDS}; the '
          'check asks that fine-tuning moved Acc O_FT by >= FT_CHANGED_MIN', PT_KEPT_MIN,
          control='Acc O_PT of the same model before fine-tuning'),
    Claim(WORLD, 'P1a', 'Fig 5: ' + _WRAPPER, _MARGIN, 0.0,
          control='the same margin of the C_Tr=0 models at the same lrs, seeds and budget'),
    Claim(WORLD, 'P1b',
          'Fig 6: low prior: Acc O_PT (C_Te=0) ends lower with C_Tr=1 than with C_Tr=0 (every lr '
          'where fine-tuning changed the model)',
          'Acc O_PT at C_Te=0, C_Tr=0 minus C_Tr=1, same seed, at the last evaluation, points; '
          f'worst lr per seed; {_SEEDS}', P1B_DROP_MIN,
          control='C_Tr=0 models of the same seed, lr and budget (the metric is the difference)'),
    Claim(WORLD, 'P2',
          f'Fig 7: low prior, smallest lr, C_Tr=1: pruning <= {PRUNE_FEW_NEURONS} neurons (grad x '
          f'weight) raises Acc O_PT by >= {PRUNE_PT_GAIN_MIN} points more than pruning as many '
          'random units of the same model',
          f'best Acc O_PT gain over K <= {PRUNE_FEW_NEURONS} among K keeping >= '
          f'{PRUNE_MIN_DISTINCT_ANSWERS} distinct answers, grad x weight minus the same search '
          f'over a random unit order of the same model (the control), points, C_Te=0; {_SEEDS}',
          PRUNE_PT_GAIN_MIN,
          control='K random units of the same model, same K range and best-K rule (the eta_L '
                  'model is not in the analysis grid)'),
    Claim(WORLD, 'P3',
          f'Fig 8: the count of O_PT stays linearly decodable (best block >= pretrained - '
          f'{PROBE_DROP_MAX} points at eta_M and eta_S; low prior at eta_M exempt)',
          'best-block held-out probe accuracy of the fine-tuned model minus the pretrained '
          "model's (C_Te=0 prompts), points; per seed the mean over its C_Tr, worst lr; "
          f'{_SEEDS}', -PROBE_DROP_MAX,
          control='the majority class of the probe labels (the floor), same probe budget'),
    Claim(WORLD, 'P4.strong',
          'Fig 9: high prior (strong capability): reFT revives O_PT within the paper\'s '
          f'{REFT_STRONG_ITERS:,} iterations, scaled by reft_steps / {PAPER_REFT_STEPS:,}',
          _ITERS, REFT_STRONG_ITERS, '<=', control=_SCR + ' (shown, not subtracted)'),
    Claim(WORLD, 'P4.weak',
          'Fig 9: low prior (weak capability): reFT revives O_PT within the paper\'s '
          f'{REFT_WEAK_ITERS:,} iterations, scaled by reft_steps / {PAPER_REFT_STEPS:,}',
          _ITERS, REFT_WEAK_ITERS, '<=', control=_SCR + ' (shown, not subtracted)'),
    Claim(WORLD, 'P4.scr_slower',
          'Fig 9: Scr.+FT (pretrained to count O_FT, then trained on O_PT) revives more slowly '
          'than reFT of the fine-tuned models',
          'per seed: Scr.+FT iterations to revival minus the median over that seed\'s reFT '
          'members that started below the threshold; one arm never revived: a bound; both: '
          f'censored (no value); {_SEEDS}', REFT_SLOWER_MIN_ITERS, control=_SCR),
    Claim(WORLD, 'E4.randft_faster',
          'App. E.4: reFT of randFT models revives faster than Scr.+FT and Scr.',
          'per seed: the faster of Scr.+FT and Scr. minus the median randFT reFT member, '
          'iterations to revival; one arm never revived: a bound; both: censored (no value); '
          f'{_SEEDS}', REFT_SLOWER_MIN_ITERS,
          control='Scr.+FT and Scr. of the same seed at the same reFT lr, budget and grid'),
    Claim(WORLD, 'E2.jailbreak_acc',
          f'App. E.2: C_Tr=1: Acc O_PT with a jailbreak family token (T_J1/T_J2) >= '
          f'{JAILBREAK_PT_MIN}',
          'Acc O_PT at C_Te=0 with the jailbreak token at the last evaluation, %; worst family, '
          'per seed the worst lr where fine-tuning changed the model; ' + _SEEDS, JAILBREAK_PT_MIN,
          control='the same models with the plain family token'),
    Claim(WORLD, 'E2.jailbreak_gain',
          f'App. E.2: C_Tr=1: the jailbreak token gives >= {JAILBREAK_GAIN_MIN} points more Acc '
          'O_PT than the fine-tuned family token',
          'Acc O_PT (C_Te=0) with the jailbreak token minus with the task\'s family token, '
          'points; worst family, per seed the worst lr where fine-tuning changed the model; '
          + _SEEDS, JAILBREAK_GAIN_MIN, control='the same models with the plain family token'),
)}


def table(task: str, pretrain_steps: int) -> dict:
  """The paper's table for (task, pretraining iterations), or {} if it has none."""
  return TABLES.get((task, pretrain_steps), {})


def table_steps(pt_step: int) -> int:
  """The pretraining length of the paper's table a checkpoint is compared with."""
  return SHORT_PRETRAIN_STEPS if pt_step == SHORT_PRETRAIN_STEPS else LONG_PRETRAIN_STEPS
