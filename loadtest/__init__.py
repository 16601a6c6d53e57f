"""`make loadtest`: Locust against the platform (local/cluster), and the rehearsals' load."""
