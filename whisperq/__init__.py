"""The `whisperq` command line and the local stack it starts: it uses api, worker and shared; they never use it."""
