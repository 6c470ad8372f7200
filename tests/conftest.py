"""Suite-wide set-up.

tests/interpreted/ holds the Triton-interpreter tests: they need TRITON_INTERPRET=1 from the start of a process
of their own, so the main collection skips the folder and tests/test_interpreted.py runs it in a subprocess.

Ctrl-C as Python's KeyboardInterrupt: a shell starts a background job (`pytest &` in a script) with SIGINT ignored,
and a process started with SIGINT ignored keeps it ignored, as do the commands it starts; the tests that send SIGINT
to this process or to a command (test_limits.py, test_train.py, test_distributed.py) then saw it do nothing (seven
failed so, once). The suite takes Ctrl-C's default handling back, however it was started."""

import signal

collect_ignore = ["interpreted"]

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
