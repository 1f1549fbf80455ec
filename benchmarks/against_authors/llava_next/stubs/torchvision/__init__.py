"""Stand-in for torchvision in the oracle venv (see the harness README): the authors' framefusion/utils.py imports
torchvision.transforms at module level for its frame-saving helpers, which the harness never calls. No torchvision
wheel matching the CPU build of torch 2.13.0 loads there."""
