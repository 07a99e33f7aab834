"""What the machine is doing, sudoless: GPU use and memory, memory pressure, swap, power and thermal
state (macOS tools, NVML elsewhere), pre-flight checks before a stage starts, and notifications.

Parsers are pure functions over a tool's text output (``macos``); running the tools is ``sampler``'s
job, with timeouts, and only when asked: importing any module here starts nothing. Standard library
only at import time (psutil and pynvml are imported where they are used).
"""
