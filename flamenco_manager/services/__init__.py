"""The manager's rules: workers, scheduling, task updates, jobs, logs, loops. No HTTP here."""
