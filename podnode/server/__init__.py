"""One node wired together: the command line (main), joining (join), the wiring (node), the reads the API
answers from (reads), and the HTTP client for other nodes (peers)."""
