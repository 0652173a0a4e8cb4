"""The thin HTTP ingress: stores uploads, records tasks, enqueues jobs. It never loads a model."""
