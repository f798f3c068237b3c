import os

# No test may reach a model hub: a stray download attempt must fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# pytest-xdist runs one worker per core; torch's default of one OpenMP thread per core in every
# worker oversubscribes the cores, and OpenMP's spin-waiting then slows training tests tenfold.
# Subprocesses started by tests inherit the setting.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
