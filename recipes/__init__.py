"""Training recipes of VITA: the SFT script, its collator and data tools."""
