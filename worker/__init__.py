"""RQ workers: each loads one faster-whisper model once and runs jobs from its model's queues."""
