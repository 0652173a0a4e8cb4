"""Contracts shared by the API and the workers: settings, schemas, enums, errors, Redis key names, the stores and
the task lifecycle. It imports nothing else of ours."""
