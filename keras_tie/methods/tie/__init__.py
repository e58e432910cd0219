"""TIE (001_b369f55403bc771c.txt) and its baselines: the (n+1)-class model with its
generator step (`model`), the garbage pool (`pool`), the epoch-level inversion and
exclusion (`exclusion`), and the run recipe of methods tie, static and plain (`recipe`)."""
