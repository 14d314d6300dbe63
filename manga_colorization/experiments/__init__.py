"""Experiments: the architectures x losses grid, benchmarks against the real peer, studies with committed JSON and the
offline real-art builder. Installed (their commands are part of `mangacolor`), but no library module imports them."""
