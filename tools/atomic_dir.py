"""build_dir(final, build): a directory that is complete or absent, for the tools that write assets and goldens.

build(tmp) fills a temporary sibling of `final`; only when it returns is the sibling renamed to `final` (replacing a
previous one). An exception leaves `final` as it was and removes the temporary directory.
"""
import os
import shutil
import tempfile


def build_dir(final, build):
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}-", dir=parent)
    try:
        build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
