"""QuietError: a CLI failure reported as one line and an exit code, never a traceback
(after S3QL's QuietError). Kept in its own module so `python -m tools.cli` and the imported
`tools.cli` agree on the class."""


class QuietError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code
