"""The PCFG world of the paper (Sec. 4-5, App. B.2, C.2, E): grammar, windows, tasks, data."""
