"""lmms-eval integration: `python -m lmms_eval --model framefusion ...` (install with `pip install -e ".[lmms-eval]"`).

registration.py is the entry point lmms-eval loads (kept free of heavy imports); model.py is the model class, a
thin adapter over framefusion.pipeline.loading and framefusion.pipeline.
"""
