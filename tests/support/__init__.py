"""Local stand-ins for external receivers (Slack, SMTP) that tests count deliveries against."""
