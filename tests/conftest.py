"""Suite-wide set-up.

tests/interpreted/ holds the Triton-interpreter tests: they need TRITON_INTERPRET=1 from the start of a process
of their own, so the main collection skips the folder and tests/test_interpreted.py runs it in a subprocess."""

collect_ignore = ["interpreted"]
