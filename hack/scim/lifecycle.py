"""Process lifecycle shared by the test servers of this folder."""

import os
import sys
import threading


def exit_on_stdin_eof() -> None:
    """Exit when stdin closes, so a test process that dies takes its servers along."""

    def watch():
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
