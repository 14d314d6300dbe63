import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def own_cache(tmp_path_factory):
    "The image cache of a module's fixture images stays in tmp (MANGACOLOR_CACHE), for the whole module."
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MANGACOLOR_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield
