"""Training: one engine for every run of `attnbench train` (issue 18).

    plan.py         what a command runs (attentions x seeds, the ensemble size), saved for --resume
    sources.py      what a run learns from: the corpus, the corpus as the RCMHA authors read it, a synthetic task
    schedule.py     what the loop does, in order: steps with validation passes, or labml's rounds (--preset paper)
    members.py      a group's models: one seed alone, or several seeds stacked as one model (torch.func.vmap)
    optim.py        learning-rate schedules, AdamW, a group's eager steps
    graphed.py      the same steps captured as CUDA graphs
    engine.py       the loop: start, loop, finish of a group; the groups of a plan
    evaluation.py   full passes over a split, per member; extrapolation; sampling
    checkpoints.py  a group's checkpoint (and its split in two)
    records.py      one record per member
    summary.py      the train command's screen summary
    distributed.py  torchrun's processes (data parallelism of a run trained alone)
"""
