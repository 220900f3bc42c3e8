"""`remedyd test` and `remedyd replay`: rule files run on a fake clock, nothing executed."""
