"""Where FFmpeg's log lines go while PyAV reads or writes: FFmpeg's own printer when verbose, else nowhere."""

from __future__ import annotations

import av

VERBOSE = False  # set by framefusion.video.set_decoder_logging


def route_ffmpeg_logs() -> None:
    """Send FFmpeg's log lines to FFmpeg's own printer when VERBOSE, else nowhere; never to PyAV's Python callback.

    That callback takes the GIL inside FFmpeg's codec threads, and freeing a frame-threaded codec (which holds
    the GIL and waits for those threads) while one of them logs deadlocks the process. Other libraries switch
    it on when imported (torchvision.io calls av.logging.set_level(ERROR)), so every open sets it again.
    """
    if VERBOSE:
        av.logging.restore_default_callback()
        av.logging.set_libav_level(av.logging.WARNING)
    else:
        av.logging.set_level(None)
