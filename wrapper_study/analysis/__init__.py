"""Analyses that know no world: read-out, probes, pruning, learned masks, reFT rows, weights."""
