"""The applications: review, moderate, analyze, translate. Each is prompts, domain types,
aggregation and reports on top of the patterns."""
