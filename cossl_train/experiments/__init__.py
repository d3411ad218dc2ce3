"""Experiments built on the training core: the Figure 3A grid (``grid``), methods over seeds
(``compare``), the demo (``demo``); ``runs`` trains and evaluates a run only when it must, and
``results`` is the grid's results table."""
