"""`churnsignal simulate`: synthetic accounts with scripted churn stories, sent to an ingest endpoint."""
