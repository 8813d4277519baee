"""Chaos cases on the real Kafka and PostgreSQL: broker and database restarts, a killed alerts process,
Slack failing, and a soak. `python -m chaos` (`make chaos`) runs them and writes docs/reliability.md."""
