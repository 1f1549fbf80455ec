"""torchvision.transforms stand-in: only the name the authors' utils.py imports; using it is an error."""


class ToPILImage:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is stubbed in the oracle venv; ToPILImage is not available")
