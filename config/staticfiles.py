"""WhiteNoise, serving what collectstatic wrote in preference to the source folders."""
from __future__ import annotations

from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WHITENOISE_USE_FINDERS lets a fresh clone serve its static files before any collectstatic,
    but WhiteNoise adds the source folders' files after the collected ones, replacing them: the
    collected copies and their compressed versions were never served. They are put back on top;
    files not collected yet are still served from the source."""

    def add_files_from_finders(self) -> None:
        super().add_files_from_finders()
        if self.static_root:
            self.add_files(self.static_root, prefix=self.static_prefix)
