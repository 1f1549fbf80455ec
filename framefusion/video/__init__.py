"""Video input: decode local files with PyAV (default) or decord and sample frames uniformly in time.

clip.py (what is returned), sampling.py (which frames), seek_plan.py (how to decode them cheaply),
pyav_reader.py / decord_reader.py (the decoders), load.py (the entry points), writing.py (encoding).
"""

from framefusion.video.clip import DECODERS, DEFAULT_NUM_FRAMES, VideoClip, VideoError, VideoInfo
from framefusion.video.decord_reader import decord_available
from framefusion.video.load import Sampling, check_video_file, load_video, probe_video, set_decoder_logging
from framefusion.video.sampling import check_sampling, rotate_upright, sample_indices, span_seconds
from framefusion.video.writing import write_video

__all__ = [
    "DECODERS",
    "DEFAULT_NUM_FRAMES",
    "Sampling",
    "VideoClip",
    "VideoError",
    "VideoInfo",
    "check_sampling",
    "check_video_file",
    "decord_available",
    "load_video",
    "probe_video",
    "rotate_upright",
    "sample_indices",
    "set_decoder_logging",
    "span_seconds",
    "write_video",
]
