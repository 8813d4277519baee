"""Backtest: replay a history through the scoring domain and measure how well it predicted churn.

`churnsignal backtest` (cli.py) reads the events (history.py), replays them per partition exactly as the
scoring consumer does, with no Kafka and no database (replay.py), takes every account's state as of each
cut-off date, and compares its health score, tier and risks with what happened next (report.py, from the
pure figures of metrics.py), beside two naive baselines computed from the same events; html.py draws it.

As of a cut (UTC midnight of the date): the state after replaying exactly the events with
occurred_at < cut, in the service's order, then moving every partition's watermark to the cut and firing
every timer due at or before it. That is `Driver.send` of those events then `Driver.advance(cut)` (the
pure driver of the scoring tests), and what the live service holds once its clock has passed the cut had
no event from the cut on arrived: the daily tick at the cut has run, no later event is seen. See
replay.py for the details and report.py for the definition of every figure; docs/backtest.md for use.
"""
