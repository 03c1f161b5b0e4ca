"""Speed of the data path (pytest-benchmark; not run by the test suite).

    python -m pytest benchmark/test_data.py --benchmark-only --benchmark-columns=mean,stddev,rounds

Reading 32 samples of a synthetic EGD-layout copy onto the 224 grid from the reader (decode,
letterbox, gaze density, four masks) and from the ``data prepare`` cache, and building that cache
with 0 and 2 worker processes -- with the generator's small images (about 440 px high) and with
the same images enlarged to MIMIC-CXR's typical 3056 px height (JPG decoding then dominates).
"""

import shutil

import pytest
from PIL import Image

from gazebench.data import synth
from gazebench.data.cache import cache_dir, prepare
from gazebench.data.egd import EGDDataset

N = 32


FULL_HEIGHT = 3056


@pytest.fixture(scope="module", params=["small", "full-size"])
def copy(request, tmp_path_factory):
    folder = synth.generate(tmp_path_factory.mktemp("bench") / "synth", n=N, seed=5, progress=False)
    if request.param == "full-size":  # masks and fixations keep their size: only decoding is timed larger
        for path in folder.glob("files/**/*.jpg"):
            with Image.open(path) as image:
                scale = FULL_HEIGHT / image.height
                image.resize((round(image.width * scale), FULL_HEIGHT), Image.BILINEAR).save(path, quality=92)
    return folder


@pytest.fixture
def reader(copy, tmp_path, monkeypatch):
    monkeypatch.setenv("GAZEBENCH_HOME", str(tmp_path / "home"))
    return EGDDataset(copy, split="all", grid=224, name="synth", require_gaze=False)


def read_all(dataset):
    return [dataset[i] for i in range(len(dataset))]


def test_read_32_samples_from_the_reader(benchmark, reader):
    samples = benchmark.pedantic(read_all, args=(reader,), rounds=3, iterations=1)
    assert len(samples) == N


def test_read_32_samples_from_the_cache(benchmark, reader):
    from gazebench.data.cache import with_cache

    prepare(reader, workers=0, progress=False)
    cached = with_cache(reader)
    samples = benchmark.pedantic(read_all, args=(cached,), rounds=3, iterations=1)
    assert len(samples) == N


@pytest.mark.parametrize("workers", [0, 2])
def test_prepare_32_samples(benchmark, reader, workers):
    def build():
        shutil.rmtree(cache_dir(reader), ignore_errors=True)
        return prepare(reader, workers=workers, progress=False)

    report = benchmark.pedantic(build, rounds=3, iterations=1)
    assert report.built == N
